// Per-connection rate limit and per-IP connection cap.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import * as h from "../lib/server.mjs";

const RATE_ERROR = "rate limit exceeded, temporarily blocked";
const CAP_ERROR = "too many concurrent connections from this address";

const { serverError } = h;

describe("rate limit", { timeout: 60000 }, () => {
  const MAX = 5;
  const BLOCK_MS = 1000;
  let server;
  let sock;
  let errors;

  before(async () => {
    server = await h.startServer([
      "--rate-limit-max", String(MAX),
      "--rate-limit-window-ms", "1000",
      "--rate-limit-block-ms", String(BLOCK_MS),
    ]);
    sock = await h.connect(server);
    errors = h.collect(sock, "error");
  });

  after(async () => {
    h.closeAll(sock);
    await server?.stop();
  });

  /** Fire `n` echoes back to back; every one must be acked. */
  async function burst(tag, n = 10) {
    const reqs = Array.from({ length: n }, (_, i) => h.echo(`${tag}-${i}`));
    const results = await Promise.all(reqs.map((r) => h.ack(sock, "message", r, 10000)));
    return { reqs, results };
  }

  /** A round trip on a separate connection, so events for `sock` have been flushed. */
  async function settle() {
    const other = await h.connect(server);
    try {
      await h.ack(other, "message", h.echo("fence")).catch((e) => {
        throw new Error(`${e.message} (fresh connection ${other.id})\n${h.tail(server, 8000)}`);
      });
    } finally {
      other.disconnect();
    }
    await h.sleep(100);
  }

  it("answers the first max events and acks the rest with the rate-limit error", async () => {
    const { reqs, results } = await burst("first");
    for (let i = 0; i < MAX; i++) {
      assert.deepEqual(results[i], h.expectedEcho(reqs[i]), `reply ${i} should succeed`);
    }
    for (let i = MAX; i < reqs.length; i++) {
      assert.deepEqual(results[i], { ...reqs[i], error: RATE_ERROR }, `reply ${i} should be rate limited`);
    }
  });

  it("emits exactly one `error` event for the block", async () => {
    await settle();
    assert.deepEqual(errors.items, [serverError(RATE_ERROR)]);
  });

  it("does not affect other connections", async () => {
    const other = await h.connect(server);
    try {
      const res = await h.ack(other, "message", h.echo("unaffected"));
      assert.deepEqual(res, h.expectedEcho(h.echo("unaffected")));
    } finally {
      other.disconnect();
    }
  });

  it("lets requests through again after the block expires", async () => {
    await h.sleep(BLOCK_MS + 300);
    const res = await h.ack(sock, "message", h.echo("after block"));
    assert.deepEqual(res, h.expectedEcho(h.echo("after block")));
    assert.ok(sock.connected);
  });

  it("a second flood is blocked again with one more `error` event", async () => {
    await h.sleep(1100); // start a fresh window
    const { reqs, results } = await burst("second");
    const ok = results.filter((r) => r.error === undefined).length;
    const limited = results.filter((r) => r.error === RATE_ERROR).length;
    assert.equal(ok + limited, reqs.length, `unexpected replies: ${JSON.stringify(results)}`);
    assert.equal(ok, MAX);
    assert.equal(limited, reqs.length - MAX);
    await settle();
    assert.deepEqual(errors.items, [serverError(RATE_ERROR), serverError(RATE_ERROR)]);
  });

  it("schemas requests count towards the limit and are answered while blocked", async () => {
    await h.sleep(BLOCK_MS + 1100);
    const before = errors.items.length;
    const results = await Promise.all(
      Array.from({ length: MAX + 3 }, () => h.ack(sock, "schemas", undefined, 10000)),
    );
    for (let i = 0; i < MAX; i++) assert.match(results[i].fingerprint ?? "", /^[0-9a-f]{16}$/);
    for (let i = MAX; i < results.length; i++) {
      assert.equal(typeof results[i], "object");
      assert.equal(results[i].error, RATE_ERROR, `schemas reply ${i}: ${JSON.stringify(results[i])}`);
    }
    await settle();
    assert.equal(errors.items.length, before + 1);
  });
});

describe("per-IP connection cap", { timeout: 60000 }, () => {
  let server;
  const sockets = [];

  before(async () => {
    server = await h.startServer(["--max-connections-per-ip", "2"]);
  });

  after(async () => {
    h.closeAll(sockets);
    await server?.stop();
  });

  it("refuses a third simultaneous connection with an error event and a disconnect", async () => {
    const a = await h.connect(server);
    const b = await h.connect(server);
    sockets.push(a, b);

    const c = h.rawSocket(server);
    sockets.push(c);
    const error = h.nextEvent(c, "error", 10000);
    const disconnected = h.nextEvent(c, "disconnect", 10000);
    assert.deepEqual(await error, serverError(CAP_ERROR));
    assert.equal(await disconnected, "io server disconnect");
    assert.equal(c.connected, false);

    // The first two are untouched.
    for (const s of [a, b]) {
      const res = await h.ack(s, "message", h.echo("still allowed"));
      assert.deepEqual(res, h.expectedEcho(h.echo("still allowed")));
    }
    const health = await server.health();
    assert.equal(health.sessions, 2);
  });

  it("accepts a new connection once one of the first two disconnects", async () => {
    const [a, b] = sockets;
    a.disconnect();
    await h.waitFor(async () => (await server.health()).sessions === 1, {
      timeoutMs: 10000,
      what: "/health sessions to drop to 1",
    });
    const d = await h.connect(server);
    sockets.push(d);
    const errors = h.collect(d, "error");
    const res = await h.ack(d, "message", h.echo("new one"));
    assert.deepEqual(res, h.expectedEcho(h.echo("new one")));
    assert.ok(d.connected);
    assert.deepEqual(errors.items, []);
    assert.ok(b.connected);
    assert.equal((await server.health()).sessions, 2);
  });
});
