// What the chat peers (chat-ws.mjs, chat-sio.mjs) share: the REST subset the
// load generator uses for setup, and the message record both deliver.
//
// Users: POST /api/auth/register {username, password} -> 201 {token, user: {id, username}}
//   where token = id = username (the peers do no authentication work at all).
// Rooms: POST /api/rooms {name} -> 201 {id, name};  POST /api/rooms/{id}/join -> 200 {id}
//   (Authorization: Bearer <token>). Membership lives in this process only; the
//   server adds live connections to the room through `onJoin`.

/** room id -> Set of user ids. */
export const rooms = new Map();

let nextId = 1;

/** "receiver sender" -> ids of the direct messages the receiver has not marked read. */
const unread = new Map();

/** The `new_message` payload for a `chat_message` from `senderId`, or an error string. */
export function messageFrom(senderId, data) {
  if (data === null || typeof data !== "object" || typeof data.content !== "string" ||
      (data.receiverId === undefined && data.roomId === undefined)) {
    return "Missing required fields: receiverId and content";
  }
  const msg = { id: nextId++, senderId, content: data.content, clientMsgId: data.clientMsgId,
                createdAt: new Date().toISOString() };
  if (data.roomId !== undefined) msg.roomId = data.roomId; else {
    msg.receiverId = data.receiverId;
    const key = `${data.receiverId} ${senderId}`;
    if (!unread.has(key)) unread.set(key, []);
    unread.get(key).push(msg.id);
  }
  return msg;
}

/** `mark_read {senderId}` by `readerId`: the ids it takes (all unread from that sender). */
export function markRead(readerId, senderId) {
  const key = `${readerId} ${senderId}`;
  const ids = unread.get(key) ?? [];
  unread.delete(key);
  return ids;
}

/** The `message_sent` payload acknowledging `msg` to its sender. */
export function sentFor(msg) {
  return { id: msg.id, clientMsgId: msg.clientMsgId, createdAt: msg.createdAt };
}

/** An HTTP request listener for the REST subset; calls `onJoin(userId, roomId)`. */
export function restHandler(onJoin) {
  return (req, res) => {
    const reply = (status, body) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk) => { body += chunk; if (body.length > 65536) req.destroy(); });
    req.on("end", () => {
      let json = {};
      try { json = body ? JSON.parse(body) : {}; } catch { return reply(400, { error: "invalid JSON" }); }
      const auth = req.headers.authorization ?? "";
      const user = auth.startsWith("Bearer ") ? auth.slice(7) : null;
      const join = req.url.match(/^\/api\/rooms\/([^/]+)\/join$/);
      if (req.method === "POST" && req.url === "/api/auth/register") {
        if (typeof json.username !== "string" || json.username === "") return reply(400, { error: "username required" });
        return reply(201, { token: json.username, user: { id: json.username, username: json.username } });
      }
      if (req.method === "POST" && req.url === "/api/rooms") {
        if (!user) return reply(401, { error: "unauthorised" });
        const id = String(json.name ?? `room-${nextId++}`);
        if (!rooms.has(id)) rooms.set(id, new Set());
        rooms.get(id).add(user);
        onJoin(user, id);
        return reply(201, { id, name: id });
      }
      if (req.method === "POST" && join) {
        if (!user) return reply(401, { error: "unauthorised" });
        const id = decodeURIComponent(join[1]);
        if (!rooms.has(id)) rooms.set(id, new Set());
        rooms.get(id).add(user);
        onJoin(user, id);
        return reply(200, { id });
      }
      reply(404, { error: "not found" });
    });
  };
}
