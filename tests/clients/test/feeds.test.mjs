// The feeds and metadata platforms end to end over Socket.IO: the `--allow-private-network`
// switch, a feed and a page served by a local node HTTP server, and the default refusal of
// private addresses.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import * as h from "../lib/server.mjs";

const FEEDS_CTX = [h.AS2, h.SOCKETHUB, "https://sockethub.org/ns/context/platform/feeds/v1.jsonld"];
const METADATA_CTX = [h.AS2, h.SOCKETHUB, "https://sockethub.org/ns/context/platform/metadata/v1.jsonld"];

const RSS = `<?xml version="1.0"?><rss version="2.0"><channel><title>Local feed</title>
<link>http://example.org/</link><description>d</description>
<item><title>One</title><link>http://example.org/1</link><guid>urn:1</guid>
<pubDate>Mon, 02 Nov 2026 10:00:00 GMT</pubDate><description>First &lt;b&gt;post&lt;/b&gt;</description></item>
<item><title>Two</title><link>http://example.org/2</link><guid>urn:2</guid>
<pubDate>Tue, 03 Nov 2026 10:00:00 GMT</pubDate><description>Second</description></item>
</channel></rss>`;

const PAGE = `<html><head><title>t</title><meta property="og:title" content="Local page">
<meta property="og:site_name" content="Local"></head><body></body></html>`;

function startOrigin() {
  return new Promise((resolve) => {
    const srv = http.createServer((req, res) => {
      if (req.url === "/feed.xml") {
        res.writeHead(200, { "content-type": "application/rss+xml" });
        res.end(RSS);
      } else if (req.url === "/page.html") {
        res.writeHead(200, { "content-type": "text/html" });
        res.end(PAGE);
      } else {
        res.writeHead(404);
        res.end();
      }
    });
    srv.listen(0, "127.0.0.1", () => resolve(srv));
  });
}

const fetchFeed = (url, object) => ({
  type: "fetch",
  "@context": FEEDS_CTX,
  actor: { id: url, type: "feed" },
  ...(object ? { object } : {}),
});

describe("feeds and metadata", { timeout: 60000 }, () => {
  let origin;
  let base;
  before(async () => {
    origin = await startOrigin();
    base = `http://127.0.0.1:${origin.address().port}`;
  });
  after(() => origin?.close());

  describe("with --allow-private-network", () => {
    let server;
    let sock;
    before(async () => {
      server = await h.startServer(["--allow-private-network"]);
      sock = await h.connect(server);
    });
    after(async () => {
      h.closeAll(sock);
      await server?.stop();
    });

    it("lists feeds and metadata in the registry with their fetch verb", async () => {
      const registry = await h.ack(sock, "schemas", undefined);
      const feeds = registry.platforms.find((p) => p.id === "feeds");
      const metadata = registry.platforms.find((p) => p.id === "metadata");
      assert.deepEqual(feeds.types, ["credentials", "fetch"]);
      assert.deepEqual(metadata.types, ["credentials", "fetch"]);
    });

    it("fetches a feed into a collection of posts", async () => {
      const res = await h.ack(sock, "message", fetchFeed(`${base}/feed.xml`, { limit: 1 }));
      assert.equal(res.error, undefined, JSON.stringify(res));
      assert.deepEqual(res["@context"], FEEDS_CTX);
      assert.equal(res.type, "collection");
      assert.equal(res.summary, "Local feed");
      assert.equal(res.totalItems, 1);
      const [post] = res.items;
      assert.equal(post.type, "post");
      assert.equal(post.actor.id, `${base}/feed.xml`);
      assert.equal(post.actor.type, "feed");
      assert.equal(post.actor.name, "Local feed");
      assert.equal(post.actor.link, "http://example.org/");
      assert.equal(post.object.type, "article");
      assert.equal(post.object.title, "One");
      assert.equal(post.object.content, "First <b>post</b>");
      assert.equal(post.object.url, "http://example.org/1");
      assert.equal(post.object.datenum, Date.parse("2026-11-02T10:00:00Z"));
    });

    it("fetches page metadata", async () => {
      const res = await h.ack(sock, "message", {
        type: "fetch",
        "@context": METADATA_CTX,
        actor: { id: `${base}/page.html`, type: "website" },
      });
      assert.equal(res.error, undefined, JSON.stringify(res));
      assert.equal(res.object.type, "page");
      assert.equal(res.object.title, "Local page");
      assert.equal(res.object.siteName, "Local");
    });
  });

  describe("by default", () => {
    let server;
    let sock;
    before(async () => {
      server = await h.startServer([]);
      sock = await h.connect(server);
    });
    after(async () => {
      h.closeAll(sock);
      await server?.stop();
    });

    it("refuses a private address with the request plus error", async () => {
      const req = fetchFeed(`${base}/feed.xml`);
      const res = await h.ack(sock, "message", req);
      assert.deepEqual(res, {
        ...req,
        error: `refusing to fetch ${base}/feed.xml: address 127.0.0.1 is not public`,
      });
    });

    it("rejects limit 0 with the schema error", async () => {
      const req = fetchFeed("https://example.com/feed.xml", { limit: 0 });
      const res = await h.ack(sock, "message", req);
      assert.equal(res.error, "[feeds] /object/limit: must be >= 1");
    });
  });
});
