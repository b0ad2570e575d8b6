// The Engine.IO transports as socket.io-client uses them by default: HTTP long-polling
// first, then the upgrade to WebSocket; and polling alone. Requests and pushes must work
// on each, and across the upgrade.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import * as h from "../lib/server.mjs";

describe("transports", { timeout: 60000 }, () => {
  let server;

  before(async () => {
    server = await h.startServer();
  });

  after(async () => {
    await server?.stop();
  });

  it("starts on polling, upgrades to websocket, and answers on both", async () => {
    const sock = h.rawSocket(server, { transports: ["polling", "websocket"] });
    try {
      // The engine is created with the socket: it opens on polling, then probes.
      assert.equal(sock.io.engine.transport.name, "polling");
      const upgraded = new Promise((resolve) => sock.io.engine.once("upgrade", resolve));
      await h.withTimeout(new Promise((resolve) => sock.once("connect", resolve)), 10000, "connect");
      // A request sent right after connect (the upgrade may be under way) is answered.
      const early = await h.ack(sock, "message", h.echo("right after connect"));
      assert.equal(early.error, undefined, JSON.stringify(early));
      assert.equal(early.object.content, "right after connect");
      await h.withTimeout(upgraded, 10000, "upgrade");
      assert.equal(sock.io.engine.transport.name, "websocket");
      const late = await h.ack(sock, "message", h.echo("after upgrade"));
      assert.equal(late.object.content, "after upgrade");
      const schemas = await h.ack(sock, "schemas", undefined);
      assert.match(schemas.fingerprint, /^[0-9a-f]{16}$/);
    } finally {
      sock.disconnect();
    }
  });

  it("works on polling alone: acks, events without ack, and a clean disconnect", async () => {
    const sock = await h.connect(server, { transports: ["polling"] });
    try {
      const res = await h.ack(sock, "message", h.echo("polling"));
      assert.equal(res.object.content, "polling");
      // Without an ack the reply comes as a `message` event.
      const pushed = h.nextEvent(sock, "message", 10000);
      sock.emit("message", h.echo("no ack"));
      assert.equal((await pushed).object.content, "no ack");
      await h.waitFor(async () => (await server.health()).sessions === 1, { timeoutMs: 10000, what: "1 session" });
    } finally {
      sock.disconnect();
    }
    await h.waitFor(async () => (await server.health()).sessions === 0, {
      timeoutMs: 10000,
      what: "the polling session to be closed",
    });
  });

  it("refuses an unknown namespace with connect_error", async () => {
    const url = `${server.url}/admin`;
    const sock = h.rawSocket(url);
    try {
      const err = await h.nextEvent(sock, "connect_error", 10000);
      assert.equal(err.message, "Invalid namespace");
    } finally {
      sock.disconnect();
    }
  });
});
