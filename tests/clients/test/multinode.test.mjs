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

/** redis-server on a free loopback port in a temp dir; stop() kills it by PID. */
async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-multinode-"));
  const proc = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
    { stdio: "ignore" },
  );
  const failed = new Promise((_, reject) =>
    proc.once("error", (e) => reject(new Error(`cannot start redis-server (apt-get install redis-server): ${e.message}`))),
  );
  await Promise.race([
    failed,
    h.waitFor(
      () =>
        new Promise((resolve) => {
          const s = net.connect(port, "127.0.0.1", () => s.write("PING\r\n"));
          s.once("data", (d) => {
            s.destroy();
            resolve(d.toString().startsWith("+PONG"));
          });
          s.once("error", () => resolve(false));
        }),
      { what: "redis-server to answer PING" },
    ),
  ]);
  return {
    url: `redis://127.0.0.1:${port}/`,
    stop() {
      try {
        process.kill(proc.pid, "SIGKILL");
      } catch {
        /* already gone */
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe("two nodes on one Redis", { timeout: 120000 }, () => {
  let redis;
  let a;
  let b;
  const sockets = [];

  before(async () => {
    redis = await startRedis();
    const args = ["--redis-url", redis.url, "--request-timeout-ms", String(REQUEST_TIMEOUT_MS)];
    a = await h.startServer(args, { env: { SWITCHBOARD_SECRET: SECRET } });
    b = await h.startServer(args, { env: { SWITCHBOARD_SECRET: SECRET } });
  });

  after(async () => {
    h.closeAll(sockets);
    await Promise.all([a?.stop(), b?.stop()]);
    redis?.stop();
  });

  async function connect(node) {
    const s = await h.connect(node);
    sockets.push(s);
    return s;
  }

  it("the banner and /health name the redis engine", async () => {
    for (const node of [a, b]) {
      assert.match(node.banner, /engine: redis/);
      assert.equal((await node.health()).engine, "redis");
    }
  });

  it("a client on node B gets replies to jobs that node A's worker ran", async () => {
    // Fill node B's only dummy instance with jobs that never finish, while B is the only
    // node with a dummy instance: every one of them is B's.
    const busyB = await connect(b);
    const hangs = [];
    for (let i = 0; i < DUMMY_CONCURRENCY; i++) {
      hangs.push(h.ack(busyB, "message", h.activity("hang", `hang ${i}`), REQUEST_TIMEOUT_MS + 10000));
    }
    await h.waitFor(async () => (await b.health()).instances >= 1, { what: "node B's instance" });
    await h.sleep(500);

    // Node A starts its own instance with a job of its own ...
    const onA = await connect(a);
    const first = h.echo("from a");
    assert.deepEqual(await h.ack(onA, "message", first), h.expectedEcho(first));

    // ... and now B's jobs can only be run by A's worker; the replies come back to B.
    const onB = await connect(b);
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

    const timedOut = await Promise.all(hangs);
    assert.ok(timedOut.every((r) => typeof r.error === "string" && r.error.startsWith("request timed out")));
  });

  it("refuses to start on Redis without a shared secret", async () => {
    await assert.rejects(
      h.startServer(["--redis-url", redis.url], { env: { SWITCHBOARD_SECRET: "" } }),
      /shared secret/,
    );
  });
});

function workerPids(node) {
  return h.childPids(node.pid).filter((pid) => (h.cmdline(pid) ?? []).includes("platform"));
}

describe("a node killed mid-job", { timeout: 120000 }, () => {
  let redis;
  let a;
  let b;
  const sockets = [];
  const CLAIM_IDLE_MS = 1000;

  before(async () => {
    redis = await startRedis();
    const args = [
      "--redis-url", redis.url,
      "--request-timeout-ms", String(REQUEST_TIMEOUT_MS),
      "--redis-claim-idle-ms", String(CLAIM_IDLE_MS),
    ];
    a = await h.startServer(args, { env: { SWITCHBOARD_SECRET: SECRET } });
    b = await h.startServer(args, { env: { SWITCHBOARD_SECRET: SECRET } });
  });

  after(async () => {
    h.closeAll(sockets);
    await Promise.all([a?.stop(), b?.stop()]);
    redis?.stop();
  });

  async function connect(node) {
    const s = await h.connect(node);
    sockets.push(s);
    return s;
  }

  it("its job is taken over by the other node and answered once", async () => {
    // B's dummy instance is kept full (hangs), so only A can take B's next job.
    const busyB = await connect(b);
    const hangs = [];
    for (let i = 0; i < DUMMY_CONCURRENCY; i++) {
      hangs.push(h.ack(busyB, "message", h.activity("hang", `hang ${i}`), REQUEST_TIMEOUT_MS + 10000));
    }
    const hangsSent = Date.now();
    await h.waitFor(async () => (await b.health()).instances >= 1, { what: "node B's instance" });
    const onA = await connect(a);
    const warm = h.echo("warm a");
    assert.deepEqual(await h.ack(onA, "message", warm), h.expectedEcho(warm));

    // A's worker freezes, so the job A takes next stays unanswered until A dies.
    const [worker] = workerPids(a);
    assert.ok(worker, `node A runs a dummy worker\n${h.tail(a)}`);
    process.kill(worker, "SIGSTOP");
    // Submit late enough that B's hangs time out (and free B) well before this job does.
    await h.sleep(Math.max(0, hangsSent + 3000 - Date.now()));

    const onB = await connect(b);
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
    const timedOut = await Promise.all(hangs);
    assert.ok(timedOut.every((r) => typeof r.error === "string" && r.error.startsWith("request timed out")));
    await h.sleep(CLAIM_IDLE_MS * 2);
    assert.equal(answers, 1);
    assert.deepEqual(pushes.items, [], "no second answer arrives as a push");
  });
});

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

describe("a remote platform worker", { timeout: 120000 }, () => {
  let redis;
  let b;
  let remote;
  const sockets = [];

  before(async () => {
    redis = await startRedis();
    b = await h.startServer(
      ["--redis-url", redis.url, "--request-timeout-ms", String(REQUEST_TIMEOUT_MS)],
      { env: { SWITCHBOARD_SECRET: SECRET } },
    );
  });

  after(async () => {
    h.closeAll(sockets);
    await Promise.all([b?.stop(), remote?.stop()]);
    redis?.stop();
  });

  it("runs the jobs of a server's clients", async () => {
    const busyB = await h.connect(b);
    sockets.push(busyB);
    const hangs = [];
    for (let i = 0; i < DUMMY_CONCURRENCY; i++) {
      hangs.push(h.ack(busyB, "message", h.activity("hang", `hang ${i}`), REQUEST_TIMEOUT_MS + 10000));
    }
    await h.waitFor(async () => (await b.health()).instances >= 1, { what: "node B's instance" });
    await h.sleep(500);

    remote = await startRemoteWorker("dummy", redis.url);
    assert.match(remote.banner, /platform dummy worker serving redis:\/\/127\.0\.0\.1:\d+\/ \(engine: redis\)/);
    const onB = await h.connect(b);
    sockets.push(onB);
    const started = Date.now();
    for (let i = 0; i < 3; i++) {
      const req = h.echo(`via the remote worker ${i}`);
      assert.deepEqual(await h.ack(onB, "message", req), h.expectedEcho(req), h.tail(remote, 2000));
    }
    assert.ok(Date.now() - started < REQUEST_TIMEOUT_MS / 2, "answered by the remote worker, not after B frees up");
    await Promise.all(hangs);
    assert.deepEqual(await remote.stop(), { code: 0, signal: null }, "stops cleanly on SIGTERM");
    remote = undefined;
  });

  it("refuses platforms it cannot serve remotely, with the reason", async () => {
    await assert.rejects(startRemoteWorker("nope", redis.url), /unknown platform/);
  });
});
