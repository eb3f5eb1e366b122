// What every client test shares: where the live jobql is (set by test_js_clients.py), the
// operations of operations.graphql as documents, and the checks on a stream of events.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Kind, parse, visit } from "graphql";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through pytest tests/clients`);
  return value;
}

export const httpUrl = required("JOBQL_HTTP_URL"); // http://127.0.0.1:<port>/v1/graphql
export const wsUrl = required("JOBQL_WS_URL"); // ws://127.0.0.1:<port>/v1/graphql
export const apiKey = required("JOBQL_KEY");
export const origin = required("JOBQL_ORIGIN"); // a frontend origin in JOBQL_CORS_ORIGINS

// What a developer sees for a bad key.
export const BAD_KEY_HTTP_MESSAGE = "Missing or invalid API key: send `Authorization: Bearer <key>`.";
export const BAD_KEY_CLOSE = { code: 4403, reason: "invalid or missing API key" };

export const TERMINAL = new Set(["V1JobSucceeded", "V1JobFailed", "V1JobCancelled"]);

const source = parse(readFileSync(new URL("./operations.graphql", import.meta.url), "utf8"));
const fragments = new Map(
  source.definitions
    .filter((d) => d.kind === Kind.FRAGMENT_DEFINITION)
    .map((d) => [d.name.value, d]),
);

function spreadsIn(node, found = new Set()) {
  visit(node, {
    FragmentSpread(spread) {
      const name = spread.name.value;
      if (!found.has(name)) {
        found.add(name);
        spreadsIn(fragments.get(name), found);
      }
    },
  });
  return found;
}

/** One operation of operations.graphql as a document, with the fragments it spreads. */
export function operation(name) {
  const op = source.definitions.find(
    (d) => d.kind === Kind.OPERATION_DEFINITION && d.name?.value === name,
  );
  assert.ok(op, `no operation ${name} in operations.graphql`);
  return {
    kind: Kind.DOCUMENT,
    definitions: [op, ...[...spreadsIn(op)].map((f) => fragments.get(f))],
  };
}

export const fragment = (name) => ({ kind: Kind.DOCUMENT, definitions: [fragments.get(name)] });

/** Stored events carry seq 1, 2, 3 … with no gap and no repeat; heartbeats carry none. */
export function assertSeqsFrom(first, events) {
  const seqs = events.filter((e) => e.__typename !== "V1Heartbeat").map((e) => e.seq);
  assert.deepEqual(
    seqs,
    seqs.map((_, i) => first + i),
    `seqs ${seqs} do not run on from ${first}`,
  );
}

export const submitInput = (task, input) => ({ input: { task, input } });

/** Fails a test that waits longer than `ms` for `promise`. */
export async function within(ms, promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
