// Server lifecycle: banner, /health, session accounting, clean SIGTERM shutdown
// that leaves no platform worker behind.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, linkSync, mkdtempSync, readlinkSync, realpathSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import * as h from "../lib/server.mjs";

function platformChildren(pid) {
  return h.childPids(pid).filter((c) => {
    const cmd = h.cmdline(c);
    return cmd !== null && cmd.includes("platform");
  });
}

describe("health and sessions", { timeout: 60000 }, () => {
  let server;

  before(async () => {
    server = await h.startServer();
  });

  after(async () => {
    await server?.stop();
  });

  it("prints a banner naming the address, socket.io path and platforms", () => {
    assert.match(server.banner, /^switchboard \S+ listening on http:\/\/127\.0\.0\.1:\d+ /);
    assert.match(server.banner, /socket\.io path \/sockethub/);
    assert.match(server.banner, /platforms: dummy, feeds, metadata, irc/);
    assert.ok(server.port > 0);
  });

  it("GET /health reports status, engine, platforms and zero sessions at start", async () => {
    const health = await server.health();
    assert.equal(health.status, "ok");
    assert.equal(health.engine, "embedded");
    assert.deepEqual(health.platforms, ["dummy", "feeds", "metadata", "irc", "xmpp"]);
    assert.equal(typeof health.version, "string");
    assert.equal(health.sessions, 0);
    assert.equal(typeof health.instances, "number");
  });

  it("counts connected sessions and returns to 0 after all clients disconnect", async () => {
    const sockets = await Promise.all([h.connect(server), h.connect(server), h.connect(server)]);
    try {
      await h.waitFor(async () => (await server.health()).sessions === 3, {
        timeoutMs: 10000,
        what: "/health sessions to reach 3",
      });
      // Use them, so sessions hold credentials/activity objects/instances.
      await Promise.all(
        sockets.map(async (s, i) => {
          await h.ack(s, "credentials", h.credentials({ actor: { id: `u${i}`, type: "person" } }));
          assert.equal(await h.ack(s, "activity-object", { id: `o${i}`, type: "person" }), null);
          const res = await h.ack(s, "message", h.echo(`s${i}`));
          assert.equal(res.error, undefined);
        }),
      );
      assert.equal((await server.health()).instances, 1);
    } finally {
      h.closeAll(sockets);
    }
    await h.waitFor(async () => (await server.health()).sessions === 0, {
      timeoutMs: 10000,
      what: "/health sessions to return to 0",
    });
  });

  it("a session dropped without a clean close (transport killed) is also released", async () => {
    const s = await h.connect(server);
    await h.waitFor(async () => (await server.health()).sessions === 1, { timeoutMs: 10000, what: "1 session" });
    // Close the underlying websocket abruptly rather than sending a disconnect packet.
    const ws = s.io.engine.transport.ws;
    assert.equal(typeof ws?.terminate, "function", "expected the node `ws` transport");
    ws.terminate();
    await h.waitFor(async () => (await server.health()).sessions === 0, {
      timeoutMs: 15000,
      what: "/health sessions to return to 0 after an abrupt close",
    });
    s.disconnect();
  });
});

describe("SIGTERM shutdown", { timeout: 60000 }, () => {
  it("exits 0 and leaves no platform worker behind", async () => {
    const server = await h.startServer();
    let workers = [];
    try {
      const sock = await h.connect(server);
      const disconnected = h.nextEvent(sock, "disconnect", 15000);
      const res = await h.ack(sock, "message", h.echo("spawn a worker"));
      assert.equal(res.error, undefined);
      workers = platformChildren(server.pid);
      assert.ok(workers.length >= 1, `expected a platform worker child of ${server.pid}\n${h.tail(server)}`);
      for (const w of workers) assert.deepEqual(h.cmdline(w).slice(1), ["platform", "dummy"]);

      const exit = await server.stop(15000);
      assert.deepEqual(exit, { code: 0, signal: null }, `server exit: ${JSON.stringify(exit)}\n${h.tail(server)}`);
      await disconnected;
      sock.disconnect();
      await h.waitFor(() => workers.every((w) => !h.isAlive(w)), {
        timeoutMs: 5000,
        what: `workers ${workers} to be gone`,
      });
      assert.deepEqual(h.childPids(server.pid), []);
    } finally {
      await server.stop();
      for (const w of workers) {
        // Only PIDs this test observed as children of the server it started.
        if (h.isAlive(w)) try { process.kill(w, "SIGKILL"); } catch { /* gone */ }
      }
    }
  });

  it("exits 0 without needing SIGKILL while a request hangs", async () => {
    const server = await h.startServer(["--request-timeout-ms", "30000"]);
    let workers = [];
    try {
      const sock = await h.connect(server);
      const warm = await h.ack(sock, "message", h.echo("warm"));
      assert.equal(warm.error, undefined);
      workers = platformChildren(server.pid);
      sock.emit("message", h.activity("hang", "forever"), () => {});
      await h.sleep(200);
      const exit = await server.stop(15000);
      assert.equal(exit.forced, undefined, `server needed SIGKILL\n${h.tail(server)}`);
      assert.deepEqual(exit, { code: 0, signal: null });
      sock.disconnect();
      await h.waitFor(() => workers.every((w) => !h.isAlive(w)), {
        timeoutMs: 5000,
        what: `workers ${workers} to be gone`,
      });
    } finally {
      await server.stop();
      for (const w of workers) {
        if (h.isAlive(w)) try { process.kill(w, "SIGKILL"); } catch { /* gone */ }
      }
    }
  });
});

// The server starts workers from the lean `switchboard-worker` next to its own binary, and
// runs them as `<itself> platform <name>` when a lone binary was copied without it.
describe("worker binary", { timeout: 60000 }, () => {
  /** Echo through `server`; returns its worker children's executables after the answer. */
  async function echoAndWorkerExes(server) {
    const sock = await h.connect(server);
    try {
      const res = await h.ack(sock, "message", h.echo("which binary?"));
      assert.equal(res.error, undefined, JSON.stringify(res));
      assert.equal(res.object.content, "which binary?");
      const workers = platformChildren(server.pid);
      assert.ok(workers.length >= 1, `expected a platform worker child of ${server.pid}\n${h.tail(server)}`);
      for (const w of workers) assert.deepEqual(h.cmdline(w).slice(1), ["platform", "dummy"]);
      return workers.map((w) => readlinkSync(`/proc/${w}/exe`));
    } finally {
      h.closeAll(sock);
    }
  }

  it("workers run switchboard-worker from the server binary's directory", async () => {
    const server = await h.startServer();
    try {
      const exes = await echoAndWorkerExes(server);
      const expected = path.join(path.dirname(realpathSync(h.binPath())), "switchboard-worker");
      for (const exe of exes) assert.equal(exe, expected);
      assert.doesNotMatch(server.stderr(), /no switchboard-worker next to this binary/);
    } finally {
      await server.stop();
    }
  });

  it("a lone copied binary runs its workers itself, with a warning", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "sb-lone-"));
    // A hard link is a copy as far as the process can tell (its own path, no sibling),
    // without writing the whole binary again; a real copy across file systems.
    const lone = path.join(realpathSync(dir), "switchboard");
    try {
      linkSync(h.binPath(), lone);
    } catch {
      copyFileSync(h.binPath(), lone);
    }
    let server;
    try {
      server = await h.startServer([], { bin: lone });
      const exes = await echoAndWorkerExes(server);
      for (const exe of exes) assert.equal(exe, lone);
      assert.match(server.stderr(), /no switchboard-worker next to this binary/);
    } finally {
      await server?.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
