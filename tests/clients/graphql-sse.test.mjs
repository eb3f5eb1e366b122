// graphql-sse's client against a live jobql, in "distinct connections" mode: every operation
// is one POST with `Accept: text/event-stream`, no WebSocket. The server behind these tests
// ends a stream early when its URL asks for it (`?dropAfter=N`, see dropping.py), so the
// client's own retry is exercised against a real cut.
import assert from "node:assert/strict";
import { test } from "node:test";
import { print } from "graphql";
import { createClient } from "graphql-sse";
import {
  BAD_KEY_HTTP_MESSAGE,
  TERMINAL,
  apiKey,
  assertSeqsFrom,
  httpUrl,
  operation,
  submitInput,
  within,
} from "./jobql.mjs";

const SUBMIT = print(operation("SubmitJob"));
const EVENTS = print(operation("JobEvents"));

/**
 * A graphql-sse client for one stream. graphql-sse retries a dropped stream by sending the
 * same request again; it does not send `Last-Event-ID` itself. `headers` is called before
 * every (re)connect, so it sends the seq of the last event seen: jobql resumes after it.
 * It also retries any answer that is not 2xx (a 401 included) as a network error; `retry`
 * is awaited before each retry and may throw, which ends the operation with that error.
 */
function sseClient(key, { url = httpUrl, seen = { lastSeq: null }, requests = [] } = {}) {
  let refused = null; // a 4xx answer other than 429: retrying cannot help
  return createClient({
    url,
    singleConnection: false, // distinct connections mode
    headers: () => ({
      Authorization: `Bearer ${key}`,
      ...(seen.lastSeq === null ? {} : { "Last-Event-ID": String(seen.lastSeq) }),
    }),
    fetchFn: async (input, init) => {
      requests.push(init.headers);
      const response = await fetch(input, init);
      const status = response.status;
      refused = status >= 400 && status < 500 && status !== 429 ? response : null;
      return response;
    },
    retry: async (retries) => {
      if (refused) {
        const body = await refused.json();
        throw new Error(body.errors[0].message);
      }
      await new Promise((resolve) => setTimeout(resolve, 200 * 2 ** retries));
    },
  });
}

async function submit(client, task, input) {
  const results = [];
  for await (const result of client.iterate({ query: SUBMIT, variables: submitInput(task, input) })) {
    results.push(result);
  }
  assert.equal(results.length, 1, JSON.stringify(results));
  const answer = results[0].data.submitJob;
  assert.equal(answer.__typename, "V1SubmitJobSuccess", JSON.stringify(answer));
  return answer.job;
}

/** Every event until the stream completes (or `until` says stop), remembering the last seq. */
async function follow(client, variables, { seen = { lastSeq: null }, until = () => false } = {}) {
  const events = [];
  const run = async () => {
    for await (const result of client.iterate({ query: EVENTS, variables })) {
      assert.equal(result.errors, undefined, JSON.stringify(result.errors));
      const event = result.data.jobEvents;
      events.push(event);
      if (event.seq !== undefined) seen.lastSeq = event.seq;
      if (until(event, events)) break; // leaving the loop aborts the request
    }
    return events;
  };
  return within(20_000, run(), "the stream");
}

test("submit and follow over SSE: every event once, in order, then the terminal event", async (t) => {
  const client = sseClient(apiKey);
  t.after(() => client.dispose());
  const job = await submit(client, "echo", { topic: "graphql-sse" });
  const events = await follow(client, { jobId: job.id });
  assertSeqsFrom(1, events);
  assert.equal(events[0].__typename, "V1JobQueued");
  assert.equal(events.at(-1).__typename, "V1JobSucceeded");
  assert.equal(events.filter((e) => TERMINAL.has(e.__typename)).length, 1);
  assert.deepEqual(events.at(-1).job, { id: job.id, status: "SUCCEEDED", cancelRequested: false });
});

test("resuming with `after` the last seq seen: nothing lost or repeated", async (t) => {
  const client = sseClient(apiKey);
  t.after(() => client.dispose());
  const job = await submit(client, "slow", { topic: "resuming" });
  const first = await follow(client, { jobId: job.id }, {
    until: (e, seen) => e.__typename === "V1OutputDelta" && seen.length >= 3,
  });
  const lastSeq = first.at(-1).seq;
  assert.ok(!TERMINAL.has(first.at(-1).__typename), "the job was over before the break");
  const rest = await follow(client, { jobId: job.id, after: lastSeq });
  assertSeqsFrom(lastSeq + 1, rest);
  assertSeqsFrom(1, [...first, ...rest]);
  assert.equal(rest.at(-1).__typename, "V1JobSucceeded");
});

test("a stream the server cuts is retried with Last-Event-ID: no gap, no repeat", async (t) => {
  const seen = { lastSeq: null };
  const requests = [];
  // This server ends the response after 3 events when the URL says dropAfter=3.
  const client = sseClient(apiKey, { url: `${httpUrl}?dropAfter=3`, seen, requests });
  t.after(() => client.dispose());
  const job = await submit(sseClient(apiKey), "slow", { topic: "cut" });
  const events = await follow(client, { jobId: job.id }, { seen });
  assertSeqsFrom(1, events);
  assert.equal(events.at(-1).__typename, "V1JobSucceeded");
  // One request, cut after seq 3; one retry that resumed after it.
  assert.equal(requests.length, 2, JSON.stringify(requests));
  assert.equal(requests[0]["Last-Event-ID"], undefined);
  assert.equal(requests[1]["Last-Event-ID"], "3");
});

test("a bad key: one request, and the server's message", async (t) => {
  const requests = [];
  const client = sseClient("jq_not-a-key", { requests });
  t.after(() => client.dispose());
  const error = await follow(client, { jobId: "any" }).then(
    () => assert.fail("subscribed"),
    (e) => e,
  );
  assert.equal(error.message, BAD_KEY_HTTP_MESSAGE);
  assert.equal(requests.length, 1); // not retried

  // Without that `retry`, graphql-sse retries the 401 as a network error.
  let attempts = 0;
  const retrying = createClient({
    url: httpUrl,
    singleConnection: false,
    headers: { Authorization: "Bearer jq_not-a-key" },
    retryAttempts: 2,
    retry: async () => {},
    fetchFn: (input, init) => {
      attempts += 1;
      return fetch(input, init);
    },
  });
  t.after(() => retrying.dispose());
  const retried = await follow(retrying, { jobId: "any" }).then(
    () => assert.fail("subscribed"),
    (e) => e,
  );
  assert.equal(attempts, 3);
  assert.equal(retried.name, "NetworkError");
  assert.equal(retried.message, "Server responded with 401: Unauthorized");
  assert.equal(retried.response.status, 401);
});
