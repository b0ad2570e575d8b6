// Core Sockethub 5 protocol over a real socket.io-client: schemas, credentials,
// message (with and without ack), activity-object, legacy shapes.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import * as h from "../lib/server.mjs";

describe("protocol", { timeout: 60000 }, () => {
  let server;
  let sock;

  before(async () => {
    server = await h.startServer();
    sock = await h.connect(server);
  });

  after(async () => {
    h.closeAll(sock);
    await server?.stop();
  });

  describe("schemas", () => {
    let registry;

    it("acks the platform registry", async () => {
      registry = await h.ack(sock, "schemas", undefined);
      assert.equal(typeof registry, "object");
      assert.match(registry.fingerprint, /^[0-9a-f]{16}$/);
      assert.equal(typeof registry.version, "string");
      assert.ok(registry.version.length > 0);
      assert.deepEqual(registry.contexts, { as: h.AS2, sockethub: h.SOCKETHUB });
      assert.equal(registry.unchanged, undefined);
      assert.ok(Array.isArray(registry.platforms));
      assert.deepEqual(
        registry.platforms.map((p) => p.id),
        ["dummy", "feeds", "metadata", "irc", "xmpp"],
      );
      const dummy = registry.platforms[0];
      assert.equal(dummy.id, "dummy");
      assert.equal(dummy.contextUrl, h.DUMMY_CTX);
      assert.equal(typeof dummy.version, "string");
      assert.equal(typeof dummy.contextVersion, "string");
      assert.equal(typeof dummy.schemaVersion, "string");
      assert.deepEqual(dummy.types, h.DUMMY_TYPES);
      assert.deepEqual(Object.keys(dummy.schemas).sort(), ["credentials", "messages"]);
      assert.equal(typeof dummy.schemas.credentials, "object");
      // The verbs in the message schema are the registry types minus "credentials".
      assert.deepEqual(
        [...dummy.schemas.messages.properties.type.enum].sort(),
        h.DUMMY_TYPES.filter((t) => t !== "credentials").sort(),
      );
    });

    it("answers {fingerprint, unchanged:true} for the current fingerprint", async () => {
      const reg = registry ?? (await h.ack(sock, "schemas", undefined));
      const res = await h.ack(sock, "schemas", reg.fingerprint);
      assert.deepEqual(res, { fingerprint: reg.fingerprint, unchanged: true });
    });

    it("answers the full registry for a stale fingerprint", async () => {
      const reg = registry ?? (await h.ack(sock, "schemas", undefined));
      const res = await h.ack(sock, "schemas", "0000000000000000");
      assert.deepEqual(res, reg);
    });

    it("is stable across connections", async () => {
      const reg = registry ?? (await h.ack(sock, "schemas", undefined));
      const other = await h.connect(server);
      try {
        assert.deepEqual(await h.ack(other, "schemas", undefined), reg);
      } finally {
        other.disconnect();
      }
    });

    it("emits `schemas` back when no ack is given", async () => {
      const reg = registry ?? (await h.ack(sock, "schemas", undefined));
      const pushed = h.nextEvent(sock, "schemas", 5000);
      sock.emit("schemas");
      assert.deepEqual(await pushed, reg);
    });
  });

  describe("message", () => {
    it("echo swaps actor and target and stamps the canonical @context", async () => {
      const req = h.echo("Hello!");
      const res = await h.ack(sock, "message", req);
      assert.deepEqual(res, {
        type: "echo",
        "@context": [h.AS2, h.SOCKETHUB, h.DUMMY_CTX],
        actor: { id: "dummy", type: "platform" },
        target: { id: "test", type: "person" },
        object: { type: "message", content: "Hello!" },
      });
    });

    it("echo keeps id and published", async () => {
      const req = h.echo("with id", { id: "msg-1", published: "2024-01-01T00:00:00Z" });
      const res = await h.ack(sock, "message", req);
      assert.deepEqual(res, h.expectedEcho(req));
      assert.equal(res.id, "msg-1");
      assert.equal(res.published, "2024-01-01T00:00:00Z");
    });

    it("greet prefixes the content with Hello", async () => {
      const res = await h.ack(sock, "message", h.greet("world"));
      assert.deepEqual(res, {
        type: "greet",
        "@context": [h.AS2, h.SOCKETHUB, h.DUMMY_CTX],
        actor: { id: "dummy", type: "platform" },
        target: { id: "test", type: "person" },
        object: { type: "message", content: "Hello world" },
      });
    });

    it("fail answers the request plus error", async () => {
      const req = h.activity("fail", "failure message");
      const res = await h.ack(sock, "message", req);
      assert.deepEqual(res, { ...req, error: "Error: failure message" });
    });

    it("throw answers the request plus error", async () => {
      const req = h.activity("throw", "thrown message");
      const res = await h.ack(sock, "message", req);
      assert.deepEqual(res, { ...req, error: "Error: thrown message" });
    });

    it("a message without ack gets its reply pushed as a `message` event", async () => {
      const req = h.echo("no ack please");
      const pushed = h.nextEvent(sock, "message", 10000);
      sock.emit("message", req);
      assert.deepEqual(await pushed, h.expectedEcho(req));
    });

    it("a failing message without ack gets its error pushed as a `message` event", async () => {
      const req = h.activity("fail", "pushed failure");
      const pushed = h.nextEvent(sock, "message", 10000);
      sock.emit("message", req);
      assert.deepEqual(await pushed, { ...req, error: "Error: pushed failure" });
    });

    it("replies go only to the sender", async () => {
      const other = await h.connect(server);
      try {
        const seen = h.collect(other, "message");
        const res = await h.ack(sock, "message", h.echo("private"));
        assert.equal(res.object.content, "private");
        // Round trip on the other socket, so anything misrouted would have arrived.
        await h.ack(other, "message", h.echo("other"));
        seen.stop();
        assert.deepEqual(seen.items, []);
      } finally {
        other.disconnect();
      }
    });
  });

  describe("credentials", () => {
    it("acks the normalized credentials activity", async () => {
      const req = h.credentials();
      const res = await h.ack(sock, "credentials", req);
      assert.deepEqual(res, req);
      assert.equal(res.error, undefined);
    });

    it("accepts re-sent credentials for the same actor", async () => {
      const req = h.credentials({ object: { type: "credentials", user: "test", password: "other" } });
      assert.deepEqual(await h.ack(sock, "credentials", req), req);
    });

    it("messages still work after credentials were stored", async () => {
      const res = await h.ack(sock, "message", h.echo("after creds"));
      assert.equal(res.error, undefined);
      assert.equal(res.object.content, "after creds");
    });
  });

  describe("activity-object", () => {
    it("acks null and lets later activities use the id as actor", async () => {
      const obj = { id: "alice", type: "person", name: "Alice" };
      assert.equal(await h.ack(sock, "activity-object", obj), null);
      const req = { ...h.echo("from alice"), actor: "alice" };
      const res = await h.ack(sock, "message", req);
      assert.equal(res.error, undefined, `unexpected error: ${res.error}`);
      assert.deepEqual(res, {
        type: "echo",
        "@context": [h.AS2, h.SOCKETHUB, h.DUMMY_CTX],
        actor: { id: "dummy", type: "platform" },
        target: obj,
        object: { type: "message", content: "from alice" },
      });
    });

    it("expands a declared object used as target", async () => {
      const bob = { id: "bob", type: "person", name: "Bob" };
      assert.equal(await h.ack(sock, "activity-object", bob), null);
      // An undeclared string target fails the target oneOf (see validation tests);
      // a declared one is expanded and passes. (echo then replaces target with the actor.)
      const res = await h.ack(sock, "message", { ...h.echo("to bob"), target: "bob" });
      assert.equal(res.error, undefined, `unexpected error: ${res.error}`);
    });

    it("an activity sent right after the declaration (no wait) sees it", async () => {
      for (let i = 0; i < 10; i++) {
        const obj = { id: `quick-${i}`, type: "person", name: `Quick ${i}` };
        sock.emit("activity-object", obj);
        const res = await h.ack(sock, "message", { ...h.echo(`q${i}`), actor: obj.id });
        assert.equal(res.error, undefined, `unexpected error: ${res.error}`);
        assert.deepEqual(res.target, obj);
      }
    });

    it("fails without an id", async () => {
      const obj = { type: "person", name: "Nobody" };
      assert.deepEqual(await h.ack(sock, "activity-object", obj), {
        ...obj,
        error: "activity object must have an id property.",
      });
    });

    it("fails for a non-object", async () => {
      const res = await h.ack(sock, "activity-object", "just a string");
      assert.equal(typeof res, "object");
      assert.equal(res.error, "activity object must be an object.");
    });
  });

  describe("legacy Sockethub 3/4 shapes", () => {
    it("`context: \"dummy\"` without @context is promoted and works", async () => {
      const req = {
        context: "dummy",
        type: "echo",
        actor: { id: "legacy", type: "person" },
        object: { type: "message", content: "legacy hello" },
      };
      const res = await h.ack(sock, "message", req);
      assert.deepEqual(res, {
        type: "echo",
        "@context": [h.AS2, h.SOCKETHUB, h.DUMMY_CTX],
        actor: { id: "dummy", type: "platform" },
        target: { id: "legacy", type: "person" },
        object: { type: "message", content: "legacy hello" },
      });
    });

    it("legacy credentials are promoted and accepted", async () => {
      const req = {
        context: "dummy",
        type: "credentials",
        actor: { id: "legacy", type: "person" },
        object: { type: "credentials", user: "legacy" },
      };
      const res = await h.ack(sock, "credentials", req);
      assert.equal(res.error, undefined, `unexpected error: ${res.error}`);
      assert.equal(res.type, "credentials");
      assert.deepEqual(res.actor, req.actor);
      assert.deepEqual(res.object, req.object);
    });

    it("`context: \"nope\"` is rejected for the missing @context", async () => {
      const req = { context: "nope", type: "echo", actor: { id: "legacy", type: "person" } };
      const res = await h.ack(sock, "message", req);
      assert.deepEqual(res, { ...req, error: "activity stream must contain an @context array." });
    });

    it("string actor shorthand without a declared object fails envelope validation", async () => {
      const req = { ...h.echo("shorthand"), actor: "undeclared-user" };
      const res = await h.ack(sock, "message", req);
      assert.deepEqual(res, {
        ...req,
        error: "[dummy] /actor: must match exactly one schema in oneOf: person, room, service, feed, website, platform",
      });
    });

    it("string actor shorthand with a declared object succeeds (legacy + shorthand)", async () => {
      const obj = { id: "legacy-user", type: "person", name: "Legacy User" };
      assert.equal(await h.ack(sock, "activity-object", obj), null);
      const req = { context: "dummy", type: "echo", actor: "legacy-user", object: { type: "message", content: "hi" } };
      const res = await h.ack(sock, "message", req);
      assert.equal(res.error, undefined, `unexpected error: ${res.error}`);
      assert.deepEqual(res.target, obj);
      assert.deepEqual(res.actor, { id: "dummy", type: "platform" });
      assert.deepEqual(res["@context"], [h.AS2, h.SOCKETHUB, h.DUMMY_CTX]);
    });
  });
});

// Real clients emit as soon as they are connected: socket.io-client flushes
// everything emitted before `connect` right after the CONNECT packet, and
// @sockethub/client replays credentials/activity objects from its `connect`
// handler. Every one of those events must be handled and acked.
// Run against the default runtime and a multi-threaded one (`--threads 0`),
// since the scheduling of connection set-up differs between them.
const RUNTIMES = [
  ["default runtime", []],
  ["--threads 0", ["--threads", "0"]],
];
for (const [label, args] of RUNTIMES) {
  describe(`events sent immediately on connect (${label})`, { timeout: 120000 }, () => {
    let server;

    before(async () => {
      server = await h.startServer(args);
    });

    after(async () => {
      await server?.stop();
    });

    it("are never dropped (many fresh connections, events buffered before connect)", async () => {
      const BATCHES = 30;
      const PER_BATCH = 40;
      for (let b = 0; b < BATCHES; b++) {
        const outcomes = await Promise.all(
          Array.from({ length: PER_BATCH }, async (_, i) => {
            const sock = h.rawSocket(server);
            try {
              // Emitted before the connection is established: sent right after CONNECT.
              const tag = `b${b}-c${i}`;
              const pending = [
                ["schemas", h.ack(sock, "schemas", "0000000000000000", 8000)],
                ["message", h.ack(sock, "message", h.echo(tag), 8000)],
                ["credentials", h.ack(sock, "credentials", h.credentials(), 8000)],
              ];
              const settled = await Promise.allSettled(pending.map(([, p]) => p));
              const lost = pending.filter((_, k) => settled[k].status === "rejected").map(([ev]) => ev);
              if (!lost.length) {
                assert.equal(settled[1].value.object?.content, tag);
              }
              return { id: sock.id, lost };
            } finally {
              sock.disconnect();
            }
          }),
        );
        const bad = outcomes.filter((o) => o.lost.length);
        assert.deepEqual(
          bad,
          [],
          `batch ${b}: ${bad.length}/${PER_BATCH} fresh connections never got an ack for events sent right on connect: ` +
            JSON.stringify(bad),
        );
      }
    });
  });
}
