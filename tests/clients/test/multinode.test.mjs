// Two `switchboard serve` nodes on one Redis (--redis-url): a client on either node gets
// its replies whichever node's worker ran the job, because stateless platforms share one
// job queue (a Redis stream) and replies travel on the session's Redis pub/sub channel.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import * as h from "../lib/server.mjs";

const SECRET = "5b".repeat(32);
const REQUEST_TIMEOUT_MS = 8000;
const DUMMY_CONCURRENCY = 64; // the dummy manifest's window of jobs in flight per instance

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** redis-server on a free loopback port in a temp dir; kill() and stop() by PID only. */
async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-multinode-"));
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir];
  const ping = () =>
    new Promise((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => s.write("PING\r\n"));
      s.once("data", (d) => {
        s.destroy();
        resolve(d.toString().startsWith("+PONG"));
      });
      s.once("error", () => resolve(false));
    });
  let proc;
  async function spawnServer() {
    proc = spawn("redis-server", args, { stdio: "ignore" });
    const failed = new Promise((_, reject) =>
      proc.once("error", (e) => reject(new Error(`cannot start redis-server (apt-get install redis-server): ${e.message}`))),
    );
    await Promise.race([failed, h.waitFor(ping, { what: "redis-server to answer PING" })]);
  }
  await spawnServer();
  const redis = {
    url: `redis://127.0.0.1:${port}/`,
    async kill() {
      const gone = new Promise((resolve) => proc.once("exit", resolve));
      try {
        process.kill(proc.pid, "SIGKILL");
      } catch {
        /* already gone */
      }
      await gone;
    },
    /** Start again on the same port (empty: no persistence). */
    restart: spawnServer,
    async stop() {
      await redis.kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return redis;
}

/**
 * A Redis and `count` server nodes on it, started in `before` and stopped in `after` of the
 * enclosing describe. Returns {redis, nodes, connect(node)}; sockets are closed at the end.
 */
function cluster(count, extraArgs = []) {
  const c = { redis: null, nodes: [], sockets: [], remote: null };
  before(async () => {
    c.redis = await startRedis();
    const args = ["--redis-url", c.redis.url, "--request-timeout-ms", String(REQUEST_TIMEOUT_MS), ...extraArgs];
    for (let i = 0; i < count; i++) {
      c.nodes.push(await h.startServer(args, { env: { SWITCHBOARD_SECRET: SECRET } }));
    }
  });
  after(async () => {
    h.closeAll(c.sockets);
    await Promise.all([...c.nodes.map((n) => n.stop()), c.remote?.stop()]);
    await c.redis?.stop();
  });
  c.connect = async (node) => {
    const s = await h.connect(node);
    c.sockets.push(s);
    return s;
  };
  return c;
}

/**
 * Fill `node`'s dummy instance with jobs that never finish, while it is the only instance
 * anywhere (so every one of them is its own): until they time out, jobs that node queues
 * can only be run by another node's worker. Resolves to the hangs' eventual replies.
 */
async function fillWithHangs(c, node) {
  const sock = await c.connect(node);
  const hangs = [];
  for (let i = 0; i < DUMMY_CONCURRENCY; i++) {
    hangs.push(h.ack(sock, "message", h.activity("hang", `hang ${i}`), REQUEST_TIMEOUT_MS + 10000));
  }
  await h.waitFor(async () => (await node.health()).instances >= 1, { what: "the node's instance" });
  await h.sleep(500);
  return {
    async timedOut() {
      const replies = await Promise.all(hangs);
      assert.ok(replies.every((r) => typeof r.error === "string" && r.error.startsWith("request timed out")));
    },
  };
}

function workerPids(node) {
  return h.childPids(node.pid).filter((pid) => (h.cmdline(pid) ?? []).includes("platform"));
}

/** `switchboard platform <name> --redis-url …`, resolved once its banner is out. */
async function startRemoteWorker(name, redisUrl) {
  const proc = spawn(h.binPath(), ["platform", name, "--redis-url", redisUrl], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, SWITCHBOARD_SECRET: SECRET, RUST_LOG: "info", NO_COLOR: "1" },
  });
  let stderr = "";
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (d) => (stderr += d));
  proc.stdout.setEncoding("utf8");
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
  const banner = await h.withTimeout(
    new Promise((resolve, reject) => {
      let out = "";
      proc.stdout.on("data", (d) => {
        out += d;
        if (out.includes("\n")) resolve(out.split("\n")[0]);
      });
      exited.then((e) => reject(new Error(`remote worker exited (${JSON.stringify(e)}):\n${stderr}`)));
    }),
    30000,
    "remote worker banner",
  );
  return {
    banner,
    pid: proc.pid,
    stderr: () => stderr,
    async stop() {
      try {
        process.kill(proc.pid, "SIGTERM");
      } catch {
        /* already gone */
      }
      return h.withTimeout(exited, 10000, "remote worker exit");
    },
  };
}

describe("two nodes on one Redis", { timeout: 120000 }, () => {
  const c = cluster(2);

  it("the banner and /health name the redis engine", async () => {
    for (const node of c.nodes) {
      assert.match(node.banner, /engine: redis/);
      assert.equal((await node.health()).engine, "redis");
    }
  });

  it("a client on node B gets replies to jobs that node A's worker ran", async () => {
    const [a, b] = c.nodes;
    const busy = await fillWithHangs(c, b);

    // Node A starts its own instance with a job of its own ...
    const onA = await c.connect(a);
    const first = h.echo("from a");
    assert.deepEqual(await h.ack(onA, "message", first), h.expectedEcho(first));

    // ... and now B's jobs can only be run by A's worker; the replies come back to B.
    const onB = await c.connect(b);
    const started = Date.now();
    for (let i = 0; i < 5; i++) {
      const req = h.echo(`from b ${i}`);
      assert.deepEqual(await h.ack(onB, "message", req), h.expectedEcho(req));
    }
    assert.ok(Date.now() - started < REQUEST_TIMEOUT_MS, "answered by A, not after B's hangs time out");

    // A worker crash on node A is answered to the client on node B.
    const crash = h.activity("sigkill", "crash on a");
    assert.deepEqual(await h.ack(onB, "message", crash, 15000), {
      ...crash,
      error: "Error: session thread closed unexpectedly: SIGKILL",
    });
    await busy.timedOut();
  });

  it("refuses to start on Redis without a shared secret", async () => {
    await assert.rejects(
      h.startServer(["--redis-url", c.redis.url], { env: { SWITCHBOARD_SECRET: "" } }),
      /shared secret/,
    );
  });
});

describe("a node killed mid-job", { timeout: 120000 }, () => {
  const CLAIM_IDLE_MS = 1000;
  const c = cluster(2, ["--redis-claim-idle-ms", String(CLAIM_IDLE_MS)]);

  it("its job is taken over by the other node and answered once", async () => {
    const [a, b] = c.nodes;
    const busy = await fillWithHangs(c, b);
    const hangsSent = Date.now();
    const onA = await c.connect(a);
    const warm = h.echo("warm a");
    assert.deepEqual(await h.ack(onA, "message", warm), h.expectedEcho(warm));

    // A's worker freezes, so the job A takes next stays unanswered until A dies.
    const [worker] = workerPids(a);
    assert.ok(worker, `node A runs a dummy worker\n${h.tail(a)}`);
    process.kill(worker, "SIGSTOP");
    // Submit late enough that B's hangs time out (and free B) well before this job does.
    await h.sleep(Math.max(0, hangsSent + 3000 - Date.now()));

    const onB = await c.connect(b);
    const pushes = h.collect(onB, "message");
    const req = h.echo("survives a dead node");
    let answers = 0;
    const answered = h.ack(onB, "message", req, REQUEST_TIMEOUT_MS + 5000).then((r) => {
      answers += 1;
      return r;
    });
    await h.sleep(300); // A reserves it and hands it to its frozen worker
    process.kill(a.pid, "SIGKILL");
    process.kill(worker, "SIGKILL");
    await a.exited;

    // B frees up when its hangs time out, finds the job idle past the claim time, runs it.
    assert.deepEqual(await answered, h.expectedEcho(req));
    await busy.timedOut();
    await h.sleep(CLAIM_IDLE_MS * 2);
    assert.equal(answers, 1);
    assert.deepEqual(pushes.items, [], "no second answer arrives as a push");
  });
});

describe("a remote platform worker", { timeout: 120000 }, () => {
  const c = cluster(1);

  it("runs the jobs of a server's clients", async () => {
    const [b] = c.nodes;
    const busy = await fillWithHangs(c, b);
    c.remote = await startRemoteWorker("dummy", c.redis.url);
    assert.match(c.remote.banner, /platform dummy worker serving redis:\/\/127\.0\.0\.1:\d+\/ \(engine: redis\)/);
    const onB = await c.connect(b);
    const started = Date.now();
    for (let i = 0; i < 3; i++) {
      const req = h.echo(`via the remote worker ${i}`);
      assert.deepEqual(await h.ack(onB, "message", req), h.expectedEcho(req), c.remote.stderr().slice(-2000));
    }
    assert.ok(Date.now() - started < REQUEST_TIMEOUT_MS / 2, "answered by the remote worker, not after B frees up");
    await busy.timedOut();
    assert.deepEqual(await c.remote.stop(), { code: 0, signal: null }, "stops cleanly on SIGTERM");
    c.remote = null;
  });

  it("refuses platforms it cannot serve remotely, with the reason", async () => {
    await assert.rejects(startRemoteWorker("nope", c.redis.url), /unknown platform/);
  });
});

describe("Redis going away", { timeout: 120000 }, () => {
  const c = cluster(1);

  it("closes sessions that may miss messages, refuses new ones, then recovers", async () => {
    const [node] = c.nodes;
    const before = await c.connect(node);
    const req = h.echo("before");
    assert.deepEqual(await h.ack(before, "message", req), h.expectedEcho(req));

    const error = h.nextEvent(before, "error", 15000);
    const disconnected = h.nextEvent(before, "disconnect", 15000);
    await c.redis.kill();
    // Its replies travel through Redis: the client is told, not left waiting in silence.
    assert.deepEqual(await error, h.serverError("too many undelivered messages; connection closed"));
    assert.equal(await disconnected, "io server disconnect");

    const refused = h.rawSocket(node);
    c.sockets.push(refused);
    assert.deepEqual(await h.nextEvent(refused, "error", 15000), h.serverError("server unavailable, try again later"));
    assert.equal((await node.health()).status, "ok", "the node itself stays up");

    await c.redis.restart();
    const after = await h.waitFor(
      async () => {
        const s = h.rawSocket(node);
        c.sockets.push(s);
        const outcome = await Promise.race([
          h.nextEvent(s, "connect", 5000).then(() => "connected"),
          h.nextEvent(s, "error", 5000).then(() => "refused"),
        ]).catch(() => "timeout");
        if (outcome !== "connected") return null;
        // A refused socket is connected for a moment before its error arrives.
        await h.sleep(200);
        return s.connected ? s : null;
      },
      { timeoutMs: 30000, intervalMs: 500, what: "a session after Redis came back" },
    );
    const again = h.echo("after");
    assert.deepEqual(await h.ack(after, "message", again), h.expectedEcho(again));
  });
});
