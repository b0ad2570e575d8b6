// Plain socket.io v4 server answering Sockethub-style dummy `echo` requests:
// the baseline cost of Socket.IO itself, with no gateway work.
//
//   node sio-echo.mjs [PORT]     (or env PORT; 0 picks a free port)
//   env SIO_PATH=/socket.io      (default /sockethub)
//
// Prints `listening <port>` once ready.
import { createServer } from "node:http";
import { Server } from "socket.io";

const port = Number(process.argv[2] ?? process.env.PORT ?? 10551);
const path = process.env.SIO_PATH ?? "/sockethub";

const httpServer = createServer();
const io = new Server(httpServer, { path, serveClient: false, transports: ["websocket"] });

io.on("connection", (socket) => {
  socket.on("message", (msg, ack) => {
    if (typeof ack !== "function") return;
    if (msg === null || typeof msg !== "object" || Array.isArray(msg)) {
      ack({ error: "message must be an object" });
      return;
    }
    // The dummy platform's echo: actor and target swapped, the rest unchanged.
    ack({ ...msg, actor: { id: "dummy", type: "platform" }, target: msg.actor });
  });
});

const shutdown = () => io.close(() => process.exit(0));
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);

httpServer.listen(port, "127.0.0.1", () => {
  console.log(`listening ${httpServer.address().port}`);
});
