// The official @sockethub/client (5.0.0-alpha.11) wrapping socket.io-client.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import SockethubClient from "@sockethub/client";
import * as h from "../lib/server.mjs";

// The client (and its bundled activity-streams library) log and warn a lot;
// capture that output instead of printing it, and keep it for assertions.
const consoleLines = [];
const saved = {};
function captureConsole() {
  for (const k of ["log", "warn", "error"]) {
    saved[k] = console[k];
    console[k] = (...args) => consoleLines.push({ level: k, args });
  }
}
function restoreConsole() {
  for (const k of Object.keys(saved)) console[k] = saved[k];
}
const consoleErrors = () => consoleLines.filter((l) => l.level === "error");

/** emit through the SockethubClient public emitter, resolve with the ack. */
function scAck(sc, event, payload, timeoutMs = 10000) {
  return h.withTimeout(
    new Promise((resolve) => sc.socket.emit(event, payload, resolve)),
    timeoutMs,
    `SockethubClient ack for '${event}'`,
  );
}

function makeClient(url, opts = {}) {
  const socket = io(url, { path: "/sockethub", transports: ["websocket"], forceNew: true, ...opts });
  const sc = new SockethubClient(socket);
  sc.debug = false;
  return sc;
}

async function connected(sc, timeoutMs = 10000) {
  if (sc.socket.connected) return;
  await h.nextEvent(sc.socket, "connect", timeoutMs);
}

describe("@sockethub/client", { timeout: 60000 }, () => {
  let server;
  let sc;

  before(async () => {
    captureConsole();
    server = await h.startServer();
    sc = makeClient(server.url, { reconnection: false });
    await connected(sc);
  });

  after(async () => {
    sc?.socket.disconnect();
    await server?.stop();
    restoreConsole();
  });

  it("exports a constructor that wraps a socket.io socket", () => {
    assert.equal(typeof SockethubClient, "function");
    assert.ok(sc.socket.connected);
    assert.equal(typeof sc.socket.id, "string");
    assert.equal(typeof sc.ActivityStreams.Object.create, "function");
  });

  it("echo", async () => {
    const req = h.echo("Hello from @sockethub/client");
    const res = await scAck(sc, "message", req);
    assert.deepEqual(res, h.expectedEcho(req));
  });

  it("greet", async () => {
    const res = await scAck(sc, "message", h.greet("client"));
    assert.equal(res.error, undefined, `unexpected error: ${res.error}`);
    assert.equal(res.object.content, "Hello client");
    assert.deepEqual(res.actor, { id: "dummy", type: "platform" });
    assert.deepEqual(res.target, { id: "test", type: "person" });
  });

  it("fail reports the error in the ack", async () => {
    const req = h.activity("fail", "client failure");
    assert.deepEqual(await scAck(sc, "message", req), { ...req, error: "Error: client failure" });
  });

  it("credentials are acked and remembered by the client for replay", async () => {
    const req = h.credentials({ actor: { id: "client-user", type: "person" } });
    const res = await scAck(sc, "credentials", req);
    assert.deepEqual(res, req);
    assert.ok(sc.events.credentials.has("client-user"));
  });

  it("ActivityStreams.Object.create sends activity-object; the server acks null", async () => {
    const obj = sc.ActivityStreams.Object.create({ id: "carol", type: "person", name: "Carol" });
    assert.equal(obj.id, "carol");
    // The client only records the object after a falsy (null) ack.
    await h.waitFor(() => sc.events["activity-object"].has("carol"), {
      timeoutMs: 10000,
      what: "the activity-object ack",
    });
    assert.deepEqual(consoleErrors(), []);
  });

  it("an echo with actor \"<id>\" gets the declared object expanded", async () => {
    const req = { ...h.echo("as carol"), actor: "carol" };
    const res = await scAck(sc, "message", req);
    assert.equal(res.error, undefined, `unexpected error: ${res.error}`);
    assert.deepEqual(res.target, { id: "carol", type: "person", name: "Carol" });
    assert.deepEqual(res.actor, { id: "dummy", type: "platform" });
    assert.equal(res.object.content, "as carol");
  });

  it("create followed immediately by a message (no waiting) works", async () => {
    sc.ActivityStreams.Object.create({ id: "dave", type: "person", name: "Dave" });
    const res = await scAck(sc, "message", { ...h.echo("as dave"), actor: "dave" });
    assert.equal(res.error, undefined, `unexpected error: ${res.error}`);
    assert.deepEqual(res.target, { id: "dave", type: "person", name: "Dave" });
  });

  it("a message sent without callback arrives on sc.socket `message`", async () => {
    const req = h.echo("pushed to the client");
    const got = h.nextEvent(sc.socket, "message", 10000);
    sc.socket.emit("message", req);
    const msg = await got;
    assert.equal(msg.type, "echo");
    assert.deepEqual(msg.actor, { id: "dummy", type: "platform" });
    assert.deepEqual(msg.target, { id: "test", type: "person" });
    assert.deepEqual(msg.object, { type: "message", content: "pushed to the client" });
    assert.deepEqual(msg["@context"], [h.AS2, h.SOCKETHUB, h.DUMMY_CTX]);
  });
});

describe("@sockethub/client reconnection replay", { timeout: 60000 }, () => {
  let first;
  let second;
  let sc;

  before(() => captureConsole());

  after(async () => {
    sc?.socket.disconnect();
    await first?.stop();
    await second?.stop();
    restoreConsole();
  });

  it("replays activity objects and credentials to a restarted server on the same port", async () => {
    first = await h.startServer([], { env: { RUST_LOG: "info" } });
    const port = first.port;
    sc = makeClient(first.url, {
      reconnection: true,
      reconnectionDelay: 100,
      reconnectionDelayMax: 300,
      randomizationFactor: 0,
      timeout: 2000,
    });
    await connected(sc);

    const creds = h.credentials({ actor: { id: "replay-user", type: "person" } });
    assert.deepEqual(await scAck(sc, "credentials", creds), creds);
    sc.ActivityStreams.Object.create({ id: "replay-user", type: "person", name: "Replay User" });
    await h.waitFor(() => sc.events["activity-object"].has("replay-user"), { what: "activity-object ack" });
    const before = await scAck(sc, "message", { ...h.echo("before restart"), actor: "replay-user" });
    assert.equal(before.error, undefined, `unexpected error: ${before.error}`);

    // Restart the server on the same port.
    const disconnected = h.nextEvent(sc.socket, "disconnect", 15000);
    const exit = await first.stop();
    assert.deepEqual(exit, { code: 0, signal: null });
    await disconnected;
    assert.equal(sc.socket.connected, false);

    const reconnected = h.nextEvent(sc.socket, "connect", 20000);
    second = await h.startServer([], { port, env: { RUST_LOG: "info" } });
    assert.equal(second.port, port);
    await reconnected;
    assert.ok(sc.socket.connected);

    // The new server never saw the declaration except through the client's replay.
    const res = await scAck(sc, "message", { ...h.echo("after restart"), actor: "replay-user" });
    assert.equal(res.error, undefined, `unexpected error after replay: ${res.error}\n${h.tail(second)}`);
    assert.deepEqual(res.target, { id: "replay-user", type: "person", name: "Replay User" });

    // The replayed credentials (sent without ack) were accepted and stored.
    await h.waitFor(() => /credentials stored/.test(second.stderr()), {
      timeoutMs: 5000,
      what: "the new server to store the replayed credentials",
    });
    assert.equal((await second.health()).sessions, 1);
  });
});
