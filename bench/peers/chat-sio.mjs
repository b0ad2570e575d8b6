// socket.io 4 chat server: the Switchboard native chat protocol as Socket.IO
// events (`chat_message` in; `connection_established`, `new_message`,
// `message_sent`, `error` out), auth `{token}` = user id. The baseline for
// `switchboard-bench chat --proto sio`.
//
//   node chat-sio.mjs [PORT]         (0 picks a free port; prints `listening <port>`)
//   env REDIS_URL=redis://127.0.0.1:P  use @socket.io/redis-adapter, so several
//                                      processes form one cluster (issue 6 peer)
import { createServer } from "node:http";
import { Server } from "socket.io";
import { messageFrom, restHandler, rooms, sentFor } from "./chat-core.mjs";

const port = Number(process.argv[2] ?? process.env.PORT ?? 10562);

const httpServer = createServer(restHandler((userId, roomId) => {
  // Live sockets of the user join now (on every node, through the adapter).
  io.in(`user:${userId}`).socketsJoin(`room:${roomId}`);
}));
const io = new Server(httpServer, { serveClient: false, transports: ["websocket"] });

if (process.env.REDIS_URL) {
  const { createClient } = await import("redis");
  const { createAdapter } = await import("@socket.io/redis-adapter");
  const pub = createClient({ url: process.env.REDIS_URL });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  io.adapter(createAdapter(pub, sub));
}

io.use((socket, next) => {
  const token = socket.handshake.auth?.token;
  if (typeof token !== "string" || token === "") return next(new Error("Missing token"));
  socket.data.userId = token;
  next();
});

io.on("connection", (socket) => {
  const userId = socket.data.userId;
  socket.conn.transport.socket?._socket?.setNoDelay(true);
  socket.join(`user:${userId}`);
  for (const [roomId, members] of rooms) if (members.has(userId)) socket.join(`room:${roomId}`);
  socket.emit("connection_established", { userId });
  socket.on("chat_message", (data) => {
    const msg = messageFrom(userId, data);
    if (typeof msg === "string") {
      return socket.emit("error", { message: msg, timestamp: new Date().toISOString() });
    }
    if (msg.roomId !== undefined) {
      // Every member's sockets but this one, as in the ws peer.
      socket.to(`room:${msg.roomId}`).except(`user:${userId}`).emit("new_message", msg);
    } else {
      io.to(`user:${msg.receiverId}`).emit("new_message", msg);
    }
    socket.emit("message_sent", sentFor(msg));
  });
});

const shutdown = () => { io.close(() => process.exit(0)); setTimeout(() => process.exit(0), 1000).unref(); };
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);
httpServer.listen(port, "127.0.0.1", () => console.log(`listening ${httpServer.address().port}`));
