// Node's ioredis against a kvs-server: pipelines, multi() (MULTI/EXEC, with a run-time error
// and a WATCH abort), and scanStream. Run by tests/tests/redis_multi.rs as
//
//     NODE_PATH=<dir with ioredis> node ioredis.js HOST PORT [PASSWORD]
//
// With PASSWORD (a server started with --requirepass), every connection gives it, and one that
// does not is first checked to be refused with NOAUTH.
// Every check is an assert; the last line printed is `ok`.
"use strict";
const assert = require("assert");
const Redis = require("ioredis");

const [host, port, password] = process.argv.slice(2);

async function main() {
  if (password !== undefined) {
    // No ready check (its INFO would be refused before anything else) and no reconnecting.
    const stranger = new Redis({
      host,
      port: Number(port),
      lazyConnect: true,
      enableReadyCheck: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    await stranger.connect();
    await assert.rejects(stranger.get("a"), /NOAUTH/);
    stranger.disconnect();
  }
  const r = new Redis({ host, port: Number(port), password, lazyConnect: true, maxRetriesPerRequest: 0 });
  await r.connect();
  await r.flushall();

  // A pipeline: each reply is [error, result].
  const piped = await r.pipeline().set("a", "1").incr("a").get("a").mget("a", "nope").exec();
  assert.deepStrictEqual(piped, [[null, "OK"], [null, 2], [null, "2"], [null, ["2", null]]]);

  // multi(): MULTI/EXEC; a run-time error is that command's entry, the others apply.
  const tx = await r.multi().set("b", "x").incr("b").set("c", "3").incrby("c", 4).exec();
  assert.strictEqual(tx[0][1], "OK");
  assert.ok(tx[1][0] instanceof Error && /not an integer/.test(tx[1][0].message), String(tx[1]));
  assert.deepStrictEqual(tx.slice(2), [[null, "OK"], [null, 7]]);
  assert.deepStrictEqual(await r.mget("b", "c"), ["x", "7"]);

  // A queuing error: EXEC is refused, nothing applied.
  await assert.rejects(
    r.multi().set("d", "1").call("NOSUCHCOMMAND").set("e", "2").exec(),
    /EXECABORT|NOSUCHCOMMAND/,
  );
  assert.strictEqual(await r.exists("d", "e"), 0);

  // WATCH: another client changes the key, EXEC answers null.
  const other = new Redis({ host, port: Number(port), password });
  await r.watch("a");
  await other.set("a", "changed");
  assert.strictEqual(await r.multi().set("a", "mine").exec(), null);
  assert.strictEqual(await r.get("a"), "changed");

  // scanStream with a pattern and a count: every matching key exactly as set.
  const want = [];
  const p = r.pipeline();
  for (let i = 0; i < 500; i++) {
    p.set(`user:${i}`, i);
    want.push(`user:${i}`);
    p.set(`other:${i}`, i);
  }
  await p.exec();
  const found = new Set();
  await new Promise((resolve, reject) => {
    const stream = r.scanStream({ match: "user:*", count: 50 });
    stream.on("data", (keys) => keys.forEach((k) => found.add(k)));
    stream.on("end", resolve);
    stream.on("error", reject);
  });
  assert.deepStrictEqual([...found].sort(), want.sort());

  other.disconnect();
  r.disconnect();
  console.log("ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
