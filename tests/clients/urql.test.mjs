// urql (@urql/core, the client urql 5 is built on) against a live jobql: fetchExchange for
// queries and mutations, subscriptionExchange over graphql-ws for jobEvents.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Client, CombinedError, cacheExchange, fetchExchange, subscriptionExchange } from "@urql/core";
import { CloseCode, createClient } from "graphql-ws";
import { toAsyncIterable } from "wonka";
import WebSocket from "ws";
import {
  BAD_KEY_CLOSE,
  BAD_KEY_HTTP_MESSAGE,
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

const SUBMIT = operation("SubmitJob");
const EVENTS = operation("JobEvents");
const CANCEL = operation("CancelJob");
const JOB = operation("Job");

// urql adds __typename to what goes over HTTP, not to subscriptions.
const jobState = ({ id, status, cancelRequested }) => ({ id, status, cancelRequested });

function urqlClient(key) {
  const wsClient = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${key}` },
    shouldRetry: (event) =>
      typeof event === "object" && event !== null && "code" in event && event.code !== CloseCode.Forbidden,
  });
  const client = new Client({
    url: httpUrl,
    // Queries over POST: the production profile turns GET queries off.
    preferGetMethod: false,
    fetchOptions: { headers: { Authorization: `Bearer ${key}`, Origin: origin } },
    exchanges: [
      cacheExchange,
      fetchExchange,
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || "" };
          return {
            subscribe(sink) {
              const unsubscribe = wsClient.subscribe(input, sink);
              return { unsubscribe };
            },
          };
        },
      }),
    ],
  });
  return { client, close: () => wsClient.dispose() };
}

async function submit(client, task, input) {
  const { data, error } = await client.mutation(SUBMIT, submitInput(task, input));
  assert.equal(error, undefined, `${error}`);
  assert.equal(data.submitJob.__typename, "V1SubmitJobSuccess", JSON.stringify(data.submitJob));
  return data.submitJob.job;
}

/** Every event until the subscription completes, or until `until` says stop. */
async function follow(client, variables, until = () => false) {
  const events = [];
  await within(20_000, (async () => {
    for await (const { data, error, hasNext } of toAsyncIterable(client.subscription(EVENTS, variables))) {
      if (error) throw error;
      // When the stream completes, urql repeats the last result with hasNext: false.
      if (!hasNext) break;
      events.push(data.jobEvents);
      if (until(data.jobEvents, events)) break; // tears the subscription down
    }
  })(), "the subscription");
  return events;
}

test("submit, then the stream from seq 1 to its terminal event", async (t) => {
  const { client, close } = urqlClient(apiKey);
  t.after(close);
  const job = await submit(client, "echo", { topic: "urql" });
  assert.equal(job.status, "QUEUED");

  const events = await follow(client, { jobId: job.id });
  assertSeqsFrom(1, events);
  assert.equal(events.filter((e) => TERMINAL.has(e.__typename)).length, 1);
  const last = events.at(-1);
  assert.equal(last.__typename, "V1JobSucceeded");
  assert.deepEqual(jobState(last.job), { id: job.id, status: "SUCCEEDED", cancelRequested: false });

  const { data } = await client.query(JOB, { id: job.id }, { requestPolicy: "network-only" });
  assert.equal(data.job.status, "SUCCEEDED");
  assert.equal(data.job.output, last.output);
});

test("resuming with `after` the last seq seen: nothing lost or repeated", async (t) => {
  const { client, close } = urqlClient(apiKey);
  t.after(close);
  const job = await submit(client, "slow", { topic: "resuming" });
  const first = await follow(client, { jobId: job.id }, (e, seen) => e.__typename === "V1OutputDelta" && seen.length >= 3);
  const lastSeq = first.filter((e) => e.seq !== undefined).at(-1).seq;
  assert.ok(!TERMINAL.has(first.at(-1).__typename), "the job was over before the break");

  const rest = await follow(client, { jobId: job.id, after: lastSeq });
  assertSeqsFrom(1, [...first, ...rest]);
  assertSeqsFrom(lastSeq + 1, rest);
  assert.equal(rest.at(-1).__typename, "V1JobSucceeded");
});

test("cancelJob answers cancelRequested at once; the stream ends with the cancelled job", async (t) => {
  const { client, close } = urqlClient(apiKey);
  t.after(close);
  const job = await submit(client, "hang", { topic: "cancelling" });
  const started = await follow(client, { jobId: job.id }, (e) => e.__typename === "V1Progress");

  const { data } = await client.mutation(CANCEL, { id: job.id, reason: "user" });
  assert.deepEqual(jobState(data.cancelJob.job), { id: job.id, status: "RUNNING", cancelRequested: true });

  const rest = await follow(client, { jobId: job.id, after: started.at(-1).seq });
  assertSeqsFrom(1, [...started, ...rest]);
  const last = rest.at(-1);
  assert.equal(last.__typename, "V1JobCancelled");
  assert.equal(last.reason, "user");
  assert.deepEqual(jobState(last.job), { id: job.id, status: "CANCELLED", cancelRequested: true });
});

test("a bad key: the server's message over HTTP, 4403 and the reason over WebSocket", async (t) => {
  const { client, close } = urqlClient("jq_not-a-key");
  t.after(close);
  const { error } = await client.mutation(SUBMIT, submitInput("echo", { topic: "x" }));
  assert.ok(error instanceof CombinedError);
  assert.equal(error.message, `[GraphQL] ${BAD_KEY_HTTP_MESSAGE}`);
  assert.equal(error.graphQLErrors[0].extensions.code, "UNAUTHENTICATED");
  assert.equal(error.response.status, 401);

  const closed = await follow(client, { jobId: "any" }).then(() => assert.fail("subscribed"), (e) => e);
  assert.equal(closed.networkError.code, BAD_KEY_CLOSE.code);
  assert.equal(closed.networkError.reason, BAD_KEY_CLOSE.reason);
});
