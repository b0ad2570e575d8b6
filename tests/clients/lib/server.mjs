// Helpers for driving a real Switchboard process with real npm clients.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";

const here = path.dirname(fileURLToPath(import.meta.url));
const pkgRoot = path.resolve(here, "..");

export const AS2 = "https://www.w3.org/ns/activitystreams";
export const SOCKETHUB = "https://sockethub.org/ns/context/v1.jsonld";
export const DUMMY_CTX = "https://sockethub.org/ns/context/platform/dummy/v1.jsonld";
export const ERROR_CTX = "https://sockethub.org/ns/context/platform/error/v1.jsonld";
export const CONTEXT = [AS2, SOCKETHUB, DUMMY_CTX];

export const DUMMY_TYPES = [
  "credentials", "echo", "greet", "fail", "throw", "exit0", "exit1",
  "sigterm", "sigkill", "hang", "throwTypeError", "throwReferenceError",
];

export function binPath() {
  const fromEnv = process.env.SWITCHBOARD_BIN;
  if (fromEnv) return path.resolve(fromEnv);
  return path.resolve(pkgRoot, "../../target/debug/switchboard");
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/** Race a promise against a timer; rejects with `what` on timeout. */
export function withTimeout(promise, ms, what = "operation") {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

/** Poll `fn` until it returns a truthy value (returned) or the deadline passes (throws). */
export async function waitFor(fn, { timeoutMs = 10000, intervalMs = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    }
    await sleep(intervalMs);
  }
}

const BANNER = /listening on (http:\/\/[^\s]+)/;

// Servers started by this process that have not exited yet. If the test
// process ends without stopping them (a crash, an uncaught error), SIGTERM
// them by PID on the way out so no orphan is left behind.
const live = new Set();
process.on("exit", () => {
  for (const pid of live) {
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      /* already gone */
    }
  }
});

/**
 * Start `switchboard serve --port 0 <args>` (the binary at `bin`) and wait for its banner.
 * Returns {url, port, pid, proc, banner, stderr(), stop(), exited}.
 */
export async function startServer(args = [], { env = {}, port = 0, startTimeoutMs = 30000, bin = binPath() } = {}) {
  // Each server gets its own chat database (in a temp dir removed when it exits) unless the
  // test names one.
  let dataDir = null;
  if (!args.includes("--database-url")) {
    dataDir = mkdtempSync(path.join(os.tmpdir(), "sb-clients-"));
    args = ["--database-url", `sqlite://${path.join(dataDir, "chat.db")}?mode=rwc`, ...args];
  }
  const fullArgs = ["serve", "--host", "127.0.0.1", "--port", String(port), ...args];
  const proc = spawn(bin, fullArgs, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info", NO_COLOR: "1", ...env },
  });
  let stdout = "";
  let stderr = "";
  const MAX = 2 * 1024 * 1024;
  proc.stderr.setEncoding("utf8");
  proc.stderr.on("data", (d) => {
    stderr += d;
    if (stderr.length > MAX) stderr = stderr.slice(-MAX);
  });
  proc.stdout.setEncoding("utf8");

  let exitInfo = null;
  live.add(proc.pid);
  const exited = new Promise((resolve) => {
    proc.on("exit", (code, signal) => {
      live.delete(proc.pid);
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });

  const banner = await withTimeout(
    new Promise((resolve, reject) => {
      proc.on("error", reject);
      proc.stdout.on("data", (d) => {
        stdout += d;
        const nl = stdout.indexOf("\n");
        if (nl >= 0) resolve(stdout.slice(0, nl));
      });
      exited.then((e) =>
        reject(new Error(`switchboard exited before banner (${JSON.stringify(e)}):\n${stderr}`)),
      );
    }),
    startTimeoutMs,
    "switchboard banner",
  );
  // Keep draining stdout so the child never blocks on a full pipe.
  proc.stdout.on("data", () => {});

  const m = BANNER.exec(banner);
  if (!m) throw new Error(`unrecognised banner: ${banner}`);
  const url = m[1].replace(/\/$/, "");
  const boundPort = Number(new URL(url).port);

  const server = {
    url,
    port: boundPort,
    pid: proc.pid,
    proc,
    banner,
    args: fullArgs,
    exited,
    get exitInfo() {
      return exitInfo;
    },
    stderr: () => stderr,
    async health() {
      const res = await withTimeout(fetch(`${url}/health`), 5000, "GET /health");
      if (!res.ok) throw new Error(`/health status ${res.status}`);
      return res.json();
    },
    /** SIGTERM by PID, wait up to timeoutMs, then SIGKILL by PID. Resolves to exit info. */
    async stop(timeoutMs = 10000) {
      if (exitInfo) return exitInfo;
      try {
        process.kill(proc.pid, "SIGTERM");
      } catch {
        /* already gone */
      }
      const res = await withTimeout(exited, timeoutMs, "server exit").catch(() => null);
      if (res) return res;
      try {
        process.kill(proc.pid, "SIGKILL");
      } catch {
        /* already gone */
      }
      const killed = await exited;
      return { ...killed, forced: true };
    },
  };
  return server;
}

/** Last `n` characters of a server's stderr, for failure messages. */
export function tail(server, n = 4000) {
  const s = server?.stderr?.() ?? "";
  return s.length > n ? s.slice(-n) : s;
}

/** The server's own error activity (Sockethub's shape), as pushed on the `error` event. */
export function serverError(summary) {
  return {
    type: "Error",
    "@context": [AS2, SOCKETHUB, ERROR_CTX],
    actor: { type: "Application", name: "sockethub-server" },
    summary,
  };
}

/** Socket.IO options matching what a Sockethub client uses. */
export function socketOptions(extra = {}) {
  return {
    path: "/sockethub",
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
    timeout: 5000,
    ...extra,
  };
}

/** Create a socket without waiting for connect. */
export function rawSocket(server, extra = {}) {
  const url = typeof server === "string" ? server : server.url;
  return io(url, socketOptions(extra));
}

/** Connect a socket.io-client socket; resolves once connected. */
export async function connect(server, extra = {}, timeoutMs = 10000) {
  const socket = rawSocket(server, extra);
  await withTimeout(
    new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    }),
    timeoutMs,
    "socket connect",
  ).catch((e) => {
    socket.disconnect();
    throw e;
  });
  return socket;
}

/** Emit `event` with payload and an ack callback; rejects if no ack within timeoutMs. */
export function ack(socket, event, payload, timeoutMs = 10000) {
  return withTimeout(
    new Promise((resolve) => {
      if (payload === undefined) socket.emit(event, resolve);
      else socket.emit(event, payload, resolve);
    }),
    timeoutMs,
    `ack for '${event}'`,
  );
}

/** Wait for the next `event` on an emitter (optionally matching `pred`); resolves to its first argument. */
export function nextEvent(emitter, event, timeoutMs = 10000, pred = () => true) {
  let handler;
  return withTimeout(
    new Promise((resolve) => {
      handler = (...args) => {
        if (pred(...args)) {
          emitter.off(event, handler);
          resolve(args[0]);
        }
      };
      emitter.on(event, handler);
    }),
    timeoutMs,
    `'${event}' event`,
  ).finally(() => emitter.off(event, handler));
}

/** Collect every `event` on an emitter into an array (returns {items, stop}). */
export function collect(emitter, event) {
  const items = [];
  const h = (x) => items.push(x);
  emitter.on(event, h);
  return { items, stop: () => emitter.off(event, h) };
}

/** Disconnect sockets, ignoring errors. */
export function closeAll(...sockets) {
  for (const s of sockets.flat()) {
    try {
      s?.disconnect();
    } catch {
      /* ignore */
    }
  }
}

// ---------------------------------------------------------------- builders

export const actor = (id = "test", type = "person") => ({ id, type });

/** A dummy-platform activity; overrides shallow-merge on top. */
export function activity(type, content = "hello", overrides = {}) {
  return {
    type,
    "@context": [...CONTEXT],
    actor: actor(),
    object: { type: "message", content },
    ...overrides,
  };
}

export const echo = (content = "hello", overrides = {}) => activity("echo", content, overrides);
export const greet = (content = "world", overrides = {}) => activity("greet", content, overrides);

export function credentials(overrides = {}) {
  return {
    type: "credentials",
    "@context": [...CONTEXT],
    actor: actor(),
    object: { type: "credentials", user: "test", password: "secret" },
    ...overrides,
  };
}

/** What the dummy echo verb answers for `req`. */
export function expectedEcho(req) {
  const out = { ...req, "@context": [...CONTEXT], actor: { id: "dummy", type: "platform" }, target: req.actor };
  return out;
}

// ---------------------------------------------------------------- processes

/** PIDs of live processes whose parent is `ppid` (from /proc/<pid>/stat). */
export function childPids(ppid) {
  const out = [];
  let entries;
  try {
    entries = readdirSync("/proc");
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${e}/stat`, "utf8");
    } catch {
      continue;
    }
    // comm may contain spaces/parens: fields after the last ')' are reliable.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const state = rest[0];
    const parent = Number(rest[1]);
    if (parent === ppid && state !== "Z") out.push(Number(e));
  }
  return out;
}

/** Command line of a process, or null if gone. */
export function cmdline(pid) {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
  } catch {
    return null;
  }
}

export function isAlive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
    return state !== "Z";
  } catch {
    return false;
  }
}
