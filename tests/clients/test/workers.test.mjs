// Platform worker behaviour seen from a client: crashes are reported in the ack
// and a fresh worker serves the next request; hangs time out; ordering and
// concurrency of requests on one socket.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import * as h from "../lib/server.mjs";

const REQUEST_TIMEOUT_MS = 2000;

function workerPids(server) {
  return h.childPids(server.pid).filter((pid) => {
    const cmd = h.cmdline(pid);
    return cmd !== null && cmd.includes("platform");
  });
}

describe("workers", { timeout: 120000 }, () => {
  let server;
  let sock;

  before(async () => {
    server = await h.startServer(["--request-timeout-ms", String(REQUEST_TIMEOUT_MS)]);
    sock = await h.connect(server);
  });

  after(async () => {
    h.closeAll(sock);
    await server?.stop();
  });

  const crashes = [
    ["exit1", "Error: session thread closed unexpectedly: 1"],
    ["exit0", "Error: session thread closed unexpectedly: 0"],
    ["sigkill", "Error: session thread closed unexpectedly: SIGKILL"],
    ["sigterm", "Error: session thread closed unexpectedly: SIGTERM"],
    ["throwTypeError", "TypeError: type error content"],
    ["throwReferenceError", "ReferenceError: reference error content"],
  ];

  for (const [verb, error] of crashes) {
    it(`${verb} is answered with "${error}" and the next echo succeeds`, async () => {
      const content = verb.startsWith("throw")
        ? verb === "throwTypeError" ? "type error content" : "reference error content"
        : `crash via ${verb}`;
      // Make sure a worker is running first.
      const warm = await h.ack(sock, "message", h.echo(`warm ${verb}`));
      assert.equal(warm.error, undefined, `unexpected error: ${warm.error}`);
      const before = workerPids(server);
      assert.equal(before.length, 1, `expected one dummy worker, saw ${JSON.stringify(before)}\n${h.tail(server)}`);

      const req = h.activity(verb, content);
      const res = await h.ack(sock, "message", req, 15000);
      assert.deepEqual(res, { ...req, error });

      const next = await h.ack(sock, "message", h.echo(`after ${verb}`), 15000);
      assert.deepEqual(next, h.expectedEcho(h.echo(`after ${verb}`)));

      // The crashed worker is gone and a fresh one serves.
      await h.waitFor(() => !h.isAlive(before[0]), { timeoutMs: 10000, what: `old worker ${before[0]} to exit` });
      const now = workerPids(server);
      assert.equal(now.length, 1, `expected one dummy worker, saw ${JSON.stringify(now)}`);
      assert.notEqual(now[0], before[0]);
    });
  }

  it("hang is answered with a request timeout error", async () => {
    const req = h.activity("hang", "never answered");
    const res = await h.ack(sock, "message", req, REQUEST_TIMEOUT_MS + 10000);
    assert.equal(typeof res.error, "string");
    assert.ok(res.error.startsWith("request timed out"), `error was: ${res.error}`);
    const { error: _e, ...rest } = res;
    assert.deepEqual(rest, req);
  });

  it("an echo during a hang on the same socket answers before the hang times out", async () => {
    const order = [];
    const hang = h.ack(sock, "message", h.activity("hang", "slow"), REQUEST_TIMEOUT_MS + 10000).then((r) => {
      order.push("hang");
      return r;
    });
    const echo = h.ack(sock, "message", h.echo("fast"), REQUEST_TIMEOUT_MS + 10000).then((r) => {
      order.push("echo");
      return r;
    });
    const [hangRes, echoRes] = await Promise.all([hang, echo]);
    assert.deepEqual(echoRes, h.expectedEcho(h.echo("fast")));
    assert.ok(hangRes.error?.startsWith("request timed out"), `hang error was: ${hangRes.error}`);
    assert.deepEqual(order, ["echo", "hang"]);
  });

  it("a burst of echoes sent without awaiting is fully answered, each with its own content", async () => {
    const N = 50;
    const reqs = Array.from({ length: N }, (_, i) => h.echo(`burst-${i}`));
    const results = await Promise.all(reqs.map((r) => h.ack(sock, "message", r, 20000)));
    for (let i = 0; i < N; i++) {
      assert.deepEqual(results[i], h.expectedEcho(reqs[i]), `reply ${i}`);
    }
    const health = await server.health();
    assert.equal(health.instances, 1);
  });

  it("pushed replies (no ack) of a burst all arrive, once each", async () => {
    // Stateless platforms run jobs concurrently (as in Sockethub), so the order of
    // pushed replies is not part of the contract; completeness is.
    const N = 20;
    const got = h.collect(sock, "message");
    for (let i = 0; i < N; i++) sock.emit("message", h.echo(`push-${i}`));
    await h.waitFor(() => got.items.length >= N, { timeoutMs: 15000, what: `${N} pushed replies` });
    // One more round trip so a duplicate would have had time to show up.
    await h.ack(sock, "message", h.echo("fence"));
    got.stop();
    assert.equal(got.items.length, N);
    for (const m of got.items) assert.deepEqual(m, h.expectedEcho(h.echo(m.object.content)));
    assert.deepEqual(
      got.items.map((m) => m.object.content).sort(),
      Array.from({ length: N }, (_, i) => `push-${i}`).sort(),
    );
  });

  it("bursts from several sockets at once are each answered to the right socket", async () => {
    const sockets = await Promise.all([h.connect(server), h.connect(server), h.connect(server)]);
    try {
      const all = sockets.map((s, si) =>
        Promise.all(
          Array.from({ length: 20 }, (_, i) => {
            const req = h.echo(`s${si}-${i}`, { actor: { id: `user-${si}`, type: "person" } });
            return h.ack(s, "message", req, 20000).then((res) => assert.deepEqual(res, h.expectedEcho(req)));
          }),
        ),
      );
      await Promise.all(all);
      const health = await server.health();
      assert.equal(health.instances, 1);
    } finally {
      h.closeAll(sockets);
    }
  });
});
