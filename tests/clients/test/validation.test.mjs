// Validation errors: exact Sockethub error strings, always answered via the ack,
// with the original input echoed back plus `error`.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import * as h from "../lib/server.mjs";

const MAX_PAYLOAD = 4096;
const NOPE_CTX = "https://sockethub.org/ns/context/platform/nope/v1.jsonld";

describe("validation", { timeout: 60000 }, () => {
  let server;
  let sock;

  before(async () => {
    server = await h.startServer(["--max-payload", String(MAX_PAYLOAD)]);
    sock = await h.connect(server);
  });

  after(async () => {
    h.closeAll(sock);
    await server?.stop();
  });

  /** Send `req` on `event`, expect `{...req, error}` back. */
  async function rejects(event, req, error) {
    const res = await h.ack(sock, event, req);
    assert.deepEqual(res, { ...req, error });
  }

  describe("normalization", () => {
    for (const [name, value] of [
      ["a string", "hello"],
      ["a number", 42],
      ["null", null],
      ["an array", [{ type: "echo" }]],
    ]) {
      it(`rejects ${name}: not an object`, async () => {
        const res = await h.ack(sock, "message", value);
        assert.equal(typeof res, "object");
        assert.notEqual(res, null);
        assert.equal(res.error, "message received is not an object.");
      });
    }

    it("rejects a missing @context", async () => {
      const req = h.echo();
      delete req["@context"];
      await rejects("message", req, "activity stream must contain an @context array.");
    });

    it("rejects a non-array @context", async () => {
      await rejects("message", { ...h.echo(), "@context": h.DUMMY_CTX }, "activity stream must contain an @context array.");
    });

    it("rejects an @context with a non-string entry", async () => {
      await rejects(
        "message",
        { ...h.echo(), "@context": [h.AS2, h.SOCKETHUB, 5] },
        "activity stream must contain an @context array.",
      );
    });

    it("rejects a missing type", async () => {
      const req = h.echo();
      delete req.type;
      await rejects("message", req, "activity stream must contain a type property.");
    });

    it("rejects a non-string type", async () => {
      await rejects("message", { ...h.echo(), type: 7 }, "activity stream must contain a type property.");
    });

    it("rejects a missing actor", async () => {
      const req = h.echo();
      delete req.actor;
      await rejects("message", req, "activity stream must contain an actor property.");
    });
  });

  describe("platform resolution", () => {
    it("rejects an unregistered platform context", async () => {
      await rejects(
        "message",
        { ...h.echo(), "@context": [h.AS2, h.SOCKETHUB, NOPE_CTX] },
        `platform context URL not registered with this Sockethub instance. Unregistered platform @context value: ${NOPE_CTX}`,
      );
    });

    it("rejects only the two base contexts", async () => {
      await rejects(
        "message",
        { ...h.echo(), "@context": [h.AS2, h.SOCKETHUB] },
        "platform context URL not registered with this Sockethub instance. No platform @context values were provided.",
      );
    });
  });

  describe("schemas", () => {
    it("rejects an unknown verb", async () => {
      await rejects("message", h.activity("dance"), "[dummy] /type: must be equal to one of the allowed values");
    });

    it("rejects an actor without id", async () => {
      await rejects("message", { ...h.echo(), actor: { type: "person" } }, "[dummy] /actor: must have required property 'id'");
    });

    it("rejects an extra top-level property", async () => {
      await rejects("message", { ...h.echo(), foo: "bar" }, "[dummy] activity stream: must NOT have additional properties: foo");
    });

    it("rejects a bad published date", async () => {
      await rejects("message", { ...h.echo(), published: "yesterday" }, '[dummy] /published: must match format "date-time"');
    });

    it("rejects an undeclared string target", async () => {
      await rejects(
        "message",
        { ...h.echo(), target: "nobody-declared-this" },
        "[dummy] /target: must match exactly one schema in oneOf: person, room, service, feed, website, platform, address, calendar",
      );
    });

    it("accepts a valid published date", async () => {
      const res = await h.ack(sock, "message", { ...h.echo("dated"), published: "2024-05-06T07:08:09Z" });
      assert.equal(res.error, undefined, `unexpected error: ${res.error}`);
    });
  });

  describe("credentials event", () => {
    it("rejects a type other than credentials", async () => {
      await rejects("credentials", h.echo(), "credential activity streams must have credentials set as type");
    });

    it("rejects a non-object", async () => {
      const res = await h.ack(sock, "credentials", "secret");
      assert.equal(res.error, "message received is not an object.");
    });

    it("rejects credentials without actor", async () => {
      const req = h.credentials();
      delete req.actor;
      await rejects("credentials", req, "activity stream must contain an actor property.");
    });

    it("rejects credentials for an unregistered platform", async () => {
      await rejects(
        "credentials",
        { ...h.credentials(), "@context": [h.AS2, h.SOCKETHUB, NOPE_CTX] },
        `platform context URL not registered with this Sockethub instance. Unregistered platform @context value: ${NOPE_CTX}`,
      );
    });
  });

  describe("size limit", () => {
    it("accepts an activity just under --max-payload", async () => {
      const req = h.echo("");
      const overhead = JSON.stringify(req).length;
      req.object.content = "a".repeat(MAX_PAYLOAD - overhead - 16);
      assert.ok(JSON.stringify(req).length < MAX_PAYLOAD);
      const res = await h.ack(sock, "message", req);
      assert.equal(res.error, undefined, `unexpected error: ${res.error}`);
      assert.equal(res.object.content, req.object.content);
    });

    it("rejects an activity over --max-payload with the size error", async () => {
      const req = h.echo("b".repeat(MAX_PAYLOAD));
      assert.ok(JSON.stringify(req).length > MAX_PAYLOAD);
      await rejects("message", req, `activity stream exceeds the maximum size of ${MAX_PAYLOAD} bytes.`);
    });

    it("rejects oversize credentials with the size error", async () => {
      const req = h.credentials({ object: { type: "credentials", password: "c".repeat(MAX_PAYLOAD) } });
      await rejects("credentials", req, `activity stream exceeds the maximum size of ${MAX_PAYLOAD} bytes.`);
    });
  });

  it("the connection stays usable after every rejection", async () => {
    assert.ok(sock.connected);
    const res = await h.ack(sock, "message", h.echo("still here"));
    assert.deepEqual(res, h.expectedEcho(h.echo("still here")));
  });
});
