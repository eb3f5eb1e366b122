// graphql-ws 6 on Node (with ws) against a live jobql: submit over HTTP, stream, resume
// with `after`, cancel, and what a bad key looks like.
import assert from "node:assert/strict";
import { test } from "node:test";
import { print } from "graphql";
import { CloseCode, createClient } from "graphql-ws";
import WebSocket from "ws";
import {
  BAD_KEY_CLOSE,
  TERMINAL,
  apiKey,
  assertSeqsFrom,
  httpUrl,
  operation,
  origin,
  submitInput,
  within,
  wsUrl,
} from "./jobql.mjs";

const SUBMIT = print(operation("SubmitJob"));
const EVENTS = print(operation("JobEvents"));
const CANCEL = print(operation("CancelJob"));

// graphql-ws retries a connection closed with 4403 by default (it reasons that access
// might be granted later); jobql's 4403 means the key is bad, so do not retry it.
const shouldRetry = (event) =>
  typeof event === "object" && event !== null && "code" in event && event.code !== CloseCode.Forbidden;

function jobqlClient(key, options = {}) {
  return createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${key}` },
    shouldRetry,
    ...options,
  });
}

async function graphql(query, variables) {
  const response = await fetch(httpUrl, {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/graphql-response+json",
      Authorization: `Bearer ${apiKey}`,
      Origin: origin,
    },
    body: JSON.stringify({ query, variables }),
  });
  // A frontend on an origin in JOBQL_CORS_ORIGINS may read the answer.
  assert.equal(response.headers.get("access-control-allow-origin"), origin);
  const body = await response.json();
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data;
}

async function submit(task, input) {
  const { submitJob } = await graphql(SUBMIT, submitInput(task, input));
  assert.equal(submitJob.__typename, "V1SubmitJobSuccess", JSON.stringify(submitJob));
  return submitJob.job;
}

test("a job streams from seq 1 to its terminal event, then the stream completes", async (t) => {
  const client = jobqlClient(apiKey);
  t.after(() => client.dispose());
  const job = await submit("echo", { topic: "graphql-ws" });
  assert.equal(job.status, "QUEUED");

  const events = [];
  const stream = client.iterate({ query: EVENTS, variables: { jobId: job.id } });
  await within(20_000, (async () => {
    for await (const result of stream) {
      assert.equal(result.errors, undefined, JSON.stringify(result.errors));
      events.push(result.data.jobEvents);
    }
  })(), "the stream");

  assertSeqsFrom(1, events);
  const last = events.at(-1);
  assert.equal(last.__typename, "V1JobSucceeded");
  assert.equal(events.filter((e) => TERMINAL.has(e.__typename)).length, 1);
  assert.deepEqual(last.job, { id: job.id, status: "SUCCEEDED", cancelRequested: false });
  const text = events.filter((e) => e.__typename === "V1OutputDelta").map((e) => e.text);
  assert.equal(text.join(""), last.output);
});

test("a stream left early resumes with `after` the last seq seen: nothing lost or repeated", async (t) => {
  const client = jobqlClient(apiKey);
  t.after(() => client.dispose());
  const job = await submit("slow", { topic: "resuming" });

  const first = [];
  for await (const result of client.iterate({ query: EVENTS, variables: { jobId: job.id } })) {
    const event = result.data.jobEvents;
    first.push(event);
    if (event.__typename === "V1OutputDelta" && first.length >= 3) break; // unsubscribes
  }
  const lastSeq = first.filter((e) => e.seq !== undefined).at(-1).seq;
  assert.ok(!TERMINAL.has(first.at(-1).__typename), "the job was over before the break");

  const rest = [];
  const resumed = client.iterate({ query: EVENTS, variables: { jobId: job.id, after: lastSeq } });
  await within(20_000, (async () => {
    for await (const result of resumed) rest.push(result.data.jobEvents);
  })(), "the resumed stream");

  assertSeqsFrom(1, [...first, ...rest]);
  assertSeqsFrom(lastSeq + 1, rest);
  assert.equal(rest.at(-1).__typename, "V1JobSucceeded");
});

test("cancelJob answers cancelRequested at once; the stream ends with V1JobCancelled and the final job", async (t) => {
  const client = jobqlClient(apiKey);
  t.after(() => client.dispose());
  const job = await submit("hang", { topic: "cancelling" });

  const events = [];
  let cancelled;
  const stream = client.iterate({ query: EVENTS, variables: { jobId: job.id } });
  await within(20_000, (async () => {
    for await (const result of stream) {
      const event = result.data.jobEvents;
      events.push(event);
      if (event.__typename === "V1Progress" && cancelled === undefined) {
        // The model is working: cancel it.
        ({ cancelJob: cancelled } = await graphql(CANCEL, { id: job.id, reason: "user" }));
      }
    }
  })(), "the cancelled stream");

  assert.equal(cancelled.__typename, "V1CancelJobSuccess", JSON.stringify(cancelled));
  assert.deepEqual(cancelled.job, { id: job.id, status: "RUNNING", cancelRequested: true });
  const last = events.at(-1);
  assert.equal(last.__typename, "V1JobCancelled");
  assert.equal(last.reason, "user");
  assert.deepEqual(last.job, { id: job.id, status: "CANCELLED", cancelRequested: true });
  assertSeqsFrom(1, events);
});

test("a bad key closes the socket with 4403 and the reason, and is not retried", async (t) => {
  let connecting = 0;
  const client = jobqlClient("jq_not-a-key", { on: { connecting: () => connecting++ } });
  t.after(() => client.dispose());
  const stream = client.iterate({ query: EVENTS, variables: { jobId: "any" } });
  const error = await within(10_000, stream.next().then(
    () => assert.fail("the subscription went through"),
    (closed) => closed,
  ), "the refusal");
  assert.equal(error.code, BAD_KEY_CLOSE.code);
  assert.equal(error.reason, BAD_KEY_CLOSE.reason);
  assert.equal(connecting, 1);
});

test("without that shouldRetry, graphql-ws 6 retries a 4403 (retryAttempts times)", async (t) => {
  let connecting = 0;
  const client = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: "Bearer jq_not-a-key" },
    retryAttempts: 2,
    retryWait: async () => {}, // the default waits 2^n s plus jitter between attempts
    on: { connecting: () => connecting++ },
  });
  t.after(() => client.dispose());
  const stream = client.iterate({ query: EVENTS, variables: { jobId: "any" } });
  const error = await within(10_000, stream.next().then(
    () => assert.fail("the subscription went through"),
    (closed) => closed,
  ), "the refusal");
  assert.equal(error.code, CloseCode.Forbidden);
  assert.equal(connecting, 3); // the first attempt and two retries
});
