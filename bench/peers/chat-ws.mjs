// Node `ws` chat server speaking the Switchboard native chat protocol
// (JSON frames {type, data} at /ws?token=<token>), the baseline for
// `switchboard-bench chat --proto ws`.
//
//   node chat-ws.mjs [PORT]      (0 picks a free port; prints `listening <port>`)
import { createServer } from "node:http";
import { WebSocketServer } from "ws";
import { markRead, messageFrom, restHandler, rooms, sentFor } from "./chat-core.mjs";

const port = Number(process.argv[2] ?? process.env.PORT ?? 10561);
/** user id -> Set of open sockets (a user may have several devices). */
const conns = new Map();

const httpServer = createServer(restHandler(() => {}));
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

httpServer.on("upgrade", (req, socket, head) => {
  const url = new URL(req.url, "http://x");
  if (url.pathname !== "/ws") return socket.destroy();
  wss.handleUpgrade(req, socket, head, (ws) => {
    const userId = url.searchParams.get("token");
    if (!userId) return ws.close(4001, "Missing token");
    onConnection(ws, userId);
  });
});

function onConnection(ws, userId) {
  ws._socket.setNoDelay(true);
  if (!conns.has(userId)) conns.set(userId, new Set());
  conns.get(userId).add(ws);
  ws.on("close", () => {
    const mine = conns.get(userId);
    mine.delete(ws);
    if (mine.size === 0) conns.delete(userId);
  });
  ws.send(JSON.stringify({ type: "connection_established", data: { userId } }));
  ws.on("message", (raw) => {
    let frame;
    try { frame = JSON.parse(raw); } catch { return error(ws, "Invalid message format. Please send valid JSON."); }
    if (frame?.type === "mark_read") return onMarkRead(ws, userId, frame.data);
    if (frame?.type !== "chat_message") return error(ws, `Unknown message type: ${frame?.type}`);
    const msg = messageFrom(userId, frame.data);
    if (typeof msg === "string") return error(ws, msg);
    // Serialised once, however many sockets receive it.
    const out = JSON.stringify({ type: "new_message", data: msg });
    if (msg.roomId !== undefined) {
      for (const member of rooms.get(String(msg.roomId)) ?? []) {
        if (member !== userId) for (const peer of conns.get(member) ?? []) peer.send(out);
      }
    } else {
      for (const peer of conns.get(String(msg.receiverId)) ?? []) peer.send(out);
    }
    ws.send(JSON.stringify({ type: "message_sent", data: sentFor(msg) }));
  });
}

// Direct read marks only (rooms are not tracked here): the reader gets
// `mark_read_success`, the sender's sockets `messages_read`.
function onMarkRead(ws, userId, data) {
  if (data?.senderId === undefined) return error(ws, "Missing required field: senderId");
  const sender = String(data.senderId);
  const messageIds = markRead(userId, sender);
  const readAt = new Date().toISOString();
  if (messageIds.length > 0) {
    const out = JSON.stringify({ type: "messages_read", data: { readerId: userId, messageIds, readAt } });
    for (const peer of conns.get(sender) ?? []) peer.send(out);
  }
  ws.send(JSON.stringify({ type: "mark_read_success",
                           data: { senderId: sender, messageIds, count: messageIds.length, readAt } }));
}

function error(ws, message) {
  ws.send(JSON.stringify({ type: "error", data: { message, timestamp: new Date().toISOString() } }));
}

const shutdown = () => { wss.close(); httpServer.close(() => process.exit(0)); setTimeout(() => process.exit(0), 1000).unref(); };
process.on("SIGINT", shutdown);
process.on("SIGTERM", shutdown);
httpServer.listen(port, "127.0.0.1", () => console.log(`listening ${httpServer.address().port}`));
