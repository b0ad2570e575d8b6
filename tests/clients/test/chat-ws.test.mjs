// Native chat driven by the npm `ws` client and fetch: register over REST, talk over /ws.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { startServer, tail, withTimeout } from "../lib/server.mjs";

const SECRET = "npm-ws-test-secret-npm-ws-test-secret-01";
let server;

before(async () => {
  server = await startServer(["--jwt-secret", SECRET]);
});

after(async () => {
  await server?.stop();
});

async function api(method, path, { token, body } = {}) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${server.url}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

async function register(username) {
  const { status, body } = await api("POST", "/api/auth/register", {
    body: { username, password: `password-${username}` },
  });
  assert.equal(status, 201, JSON.stringify(body));
  return body;
}

/** A connected client that queues incoming frames; `next(type)` takes the next frame. */
async function connect(token) {
  const ws = new WebSocket(`${server.url.replace("http", "ws")}/ws?token=${token}`);
  const frames = [];
  const waiters = [];
  let closed = null;
  ws.on("message", (data) => {
    frames.push(JSON.parse(data.toString()));
    while (waiters.length && frames.length) waiters.shift()(frames.shift());
  });
  const closing = new Promise((resolve) =>
    ws.on("close", (code, reason) => {
      closed = { code, reason: reason.toString() };
      resolve(closed);
    }),
  );
  await withTimeout(new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  }), 5000, "websocket open");
  const client = {
    ws,
    closing,
    send: (type, data) => ws.send(JSON.stringify({ type, data })),
    async next(type) {
      const frame = frames.length
        ? frames.shift()
        : await withTimeout(new Promise((r) => waiters.push(r)), 5000, `frame ${type}`);
      assert.equal(frame.type, type, `expected ${type}, got ${JSON.stringify(frame)}\n${tail(server)}`);
      return frame.data;
    },
    get closed() {
      return closed;
    },
  };
  return client;
}

test("register, login, me and a clear 401", async () => {
  const { user } = await register("npm_alice");
  const login = await api("POST", "/api/auth/login", {
    body: { username: "npm_alice", password: "password-npm_alice" },
  });
  assert.equal(login.status, 200);
  assert.deepEqual(login.body.user, user);
  const me = await api("GET", "/api/auth/me", { token: login.body.token });
  assert.equal(me.body.username, "npm_alice");
  const anon = await api("GET", "/api/auth/me");
  assert.equal(anon.status, 401);
  assert.equal(anon.body.error, "Missing bearer token");
  const bad = await api("POST", "/api/auth/login", { body: "{oops" });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error, /^Invalid JSON body/);
});

test("direct message: sent, new_message, delivered, read", async () => {
  const alice = await register("ws_alice");
  const bob = await register("ws_bob");
  const a = await connect(alice.token);
  const b = await connect(bob.token);
  assert.equal((await a.next("connection_established")).userId, alice.user.id);
  assert.equal((await b.next("connection_established")).username, "ws_bob");

  a.send("chat_message", { receiverId: bob.user.id, content: "hello from ws", clientMsgId: "w1" });
  const sent = await a.next("message_sent");
  assert.equal(sent.clientMsgId, "w1");
  const got = await b.next("new_message");
  assert.equal(got.id, sent.id);
  assert.equal(got.senderId, alice.user.id);
  assert.equal(got.content, "hello from ws");
  assert.equal((await a.next("message_delivered")).messageId, sent.id);

  b.send("mark_read", { senderId: alice.user.id });
  assert.deepEqual((await b.next("mark_read_success")).messageIds, [sent.id]);
  assert.deepEqual((await a.next("messages_read")).messageIds, [sent.id]);

  const history = await api("GET", `/api/messages?with=${bob.user.id}`, { token: alice.token });
  assert.equal(history.body.messages[0].status, "read");

  a.send("chat_message", { receiverId: alice.user.id, content: "me" });
  assert.equal((await a.next("error")).message, "Cannot send message to yourself");
  a.ws.send("not json");
  assert.equal((await a.next("error")).message, "Invalid message format. Please send valid JSON.");
  a.send("wave", {});
  assert.equal((await a.next("error")).message, "Unknown message type: wave");
  a.ws.close();
  b.ws.close();
});

test("no token closes with 4001, a bad one with 4002", async () => {
  const noToken = new WebSocket(`${server.url.replace("http", "ws")}/ws`);
  const [code1] = await withTimeout(new Promise((r) => noToken.on("close", (...a) => r(a))), 5000, "close");
  assert.equal(code1, 4001);
  const bad = new WebSocket(`${server.url.replace("http", "ws")}/ws?token=nope`);
  const [code2] = await withTimeout(new Promise((r) => bad.on("close", (...a) => r(a))), 5000, "close");
  assert.equal(code2, 4002);
});
