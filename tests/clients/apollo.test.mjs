// Apollo Client 4 against a live jobql: HttpLink for queries and mutations, GraphQLWsLink
// (graphql-ws) for subscriptions, InMemoryCache with jobql's published possibleTypes.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { ApolloClient, ApolloLink, CombinedGraphQLErrors, HttpLink, InMemoryCache } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { OperationTypeNode } from "graphql";
import { CloseCode, createClient } from "graphql-ws";
import WebSocket from "ws";
import {
  BAD_KEY_CLOSE,
  BAD_KEY_HTTP_MESSAGE,
  TERMINAL,
  apiKey,
  assertSeqsFrom,
  fragment,
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
const JOB_STATE = fragment("JobState");

// Published by jobql at /v1/possible-types.json (and checked in as
// jobql/schema/v1/possible-types.json): which types implement V1JobEvent, V1Error, …
const { possibleTypes } = await (await fetch(new URL("/v1/possible-types.json", httpUrl))).json();

const CHECKED_IN = new URL("../../jobql/schema/v1/possible-types.json", import.meta.url);

// Every response the HttpLink got, to check its CORS headers.
const responses = [];
async function recordingFetch(url, init) {
  const response = await fetch(url, init);
  responses.push(response);
  return response;
}

function apolloClient(key, { cache = new InMemoryCache({ possibleTypes }) } = {}) {
  const httpLink = new HttpLink({
    uri: httpUrl,
    headers: { Authorization: `Bearer ${key}`, Origin: origin },
    fetch: recordingFetch,
  });
  const wsClient = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${key}` },
    shouldRetry: (event) =>
      typeof event === "object" && event !== null && "code" in event && event.code !== CloseCode.Forbidden,
  });
  const link = ApolloLink.split(
    ({ operationType }) => operationType === OperationTypeNode.SUBSCRIPTION,
    new GraphQLWsLink(wsClient),
    httpLink,
  );
  const client = new ApolloClient({ link, cache });
  return { client, close: () => wsClient.dispose() };
}

async function submit(client, task, input) {
  const { data } = await client.mutate({ mutation: SUBMIT, variables: submitInput(task, input) });
  assert.equal(data.submitJob.__typename, "V1SubmitJobSuccess", JSON.stringify(data.submitJob));
  return data.submitJob.job;
}

/** Every event of the subscription until it completes (or `until` says stop). */
function follow(client, variables, until = () => false) {
  const events = [];
  return within(20_000, new Promise((resolve, reject) => {
    const subscription = client.subscribe({ query: EVENTS, variables }).subscribe({
      next: ({ data, error }) => {
        if (error) return reject(error);
        events.push(data.jobEvents);
        if (until(data.jobEvents, events)) {
          subscription.unsubscribe();
          resolve(events);
        }
      },
      error: reject,
      complete: () => resolve(events),
    });
  }), "the subscription");
}

const cachedJob = (client, id) =>
  client.cache.readFragment({ id: client.cache.identify({ __typename: "V1Job", id }), fragment: JOB_STATE });

test("the served possibleTypes are the checked-in file", () => {
  assert.deepEqual({ possibleTypes }, JSON.parse(readFileSync(CHECKED_IN, "utf8")));
  assert.ok(possibleTypes.V1JobEvent.includes("V1OutputDelta"));
  assert.ok(possibleTypes.V1Error.includes("V1NotFound"));
});

test("with possibleTypes, the stream's events keep seq; the terminal event updates the cached job", async (t) => {
  const { client, close } = apolloClient(apiKey);
  t.after(close);
  const job = await submit(client, "echo", { topic: "apollo" });
  assert.deepEqual(cachedJob(client, job.id), { __typename: "V1Job", id: job.id, status: "QUEUED", cancelRequested: false });
  assert.equal(responses.at(-1).headers.get("access-control-allow-origin"), origin);

  const events = await follow(client, { jobId: job.id });

  assert.ok(events.every((e) => e.__typename === "V1Heartbeat" || Number.isInteger(e.seq)), JSON.stringify(events));
  assertSeqsFrom(1, events);
  assert.equal(events.at(-1).__typename, "V1JobSucceeded");
  assert.equal(events.filter((e) => TERMINAL.has(e.__typename)).length, 1);
  // Nobody refetched the job: the terminal event's `job` normalized into the cache.
  assert.deepEqual(cachedJob(client, job.id), { __typename: "V1Job", id: job.id, status: "SUCCEEDED", cancelRequested: false });
});

test("without possibleTypes, Apollo drops fields selected through interface fragments", async (t) => {
  const { client, close } = apolloClient(apiKey, { cache: new InMemoryCache() });
  t.after(close);
  const job = await submit(client, "echo", { topic: "no possibleTypes" });
  const events = await follow(client, { jobId: job.id });
  const delta = events.find((e) => e.__typename === "V1OutputDelta");
  assert.equal(delta.seq, undefined); // `... on V1JobEvent { seq }`: resuming from it replays everything
  assert.equal(typeof delta.text, "string");
  const last = events.at(-1);
  assert.equal(last.__typename, "V1JobSucceeded");
  assert.equal(last.job, undefined); // `... on V1JobFinished { job }`: the cache never learns the end
  assert.equal(cachedJob(client, job.id).status, "QUEUED");
});

test("resuming with `after` the last seq seen: nothing lost or repeated", async (t) => {
  const { client, close } = apolloClient(apiKey);
  t.after(close);
  const job = await submit(client, "slow", { topic: "resuming" });
  const first = await follow(client, { jobId: job.id }, (e, seen) => e.__typename === "V1OutputDelta" && seen.length >= 3);
  const lastSeq = first.filter((e) => e.seq !== undefined).at(-1).seq;
  assert.ok(!TERMINAL.has(first.at(-1).__typename), "the job was over before the unsubscribe");

  const rest = await follow(client, { jobId: job.id, after: lastSeq });
  assertSeqsFrom(1, [...first, ...rest]);
  assertSeqsFrom(lastSeq + 1, rest);
  assert.equal(rest.at(-1).__typename, "V1JobSucceeded");
  assert.equal(cachedJob(client, job.id).status, "SUCCEEDED");
});

test("cancelJob: the cache shows cancelRequested at once and CANCELLED after the stream", async (t) => {
  const { client, close } = apolloClient(apiKey);
  t.after(close);
  const job = await submit(client, "hang", { topic: "cancelling" });
  const started = await follow(client, { jobId: job.id }, (e) => e.__typename === "V1Progress");
  assert.equal(cachedJob(client, job.id).status, "QUEUED"); // events other than the last carry no job

  const { data } = await client.mutate({ mutation: CANCEL, variables: { id: job.id, reason: "user" } });
  assert.equal(data.cancelJob.__typename, "V1CancelJobSuccess", JSON.stringify(data.cancelJob));
  assert.deepEqual(cachedJob(client, job.id), { __typename: "V1Job", id: job.id, status: "RUNNING", cancelRequested: true });

  const rest = await follow(client, { jobId: job.id, after: started.at(-1).seq });
  assert.equal(rest.at(-1).__typename, "V1JobCancelled");
  assertSeqsFrom(1, [...started, ...rest]);
  assert.deepEqual(cachedJob(client, job.id), { __typename: "V1Job", id: job.id, status: "CANCELLED", cancelRequested: true });
});

test("a bad key: the server's message over HTTP, the close code and reason over WebSocket", async (t) => {
  const { client, close } = apolloClient("jq_not-a-key");
  t.after(close);
  const error = await client.mutate({ mutation: SUBMIT, variables: submitInput("echo", { topic: "x" }) }).then(
    () => assert.fail("the mutation went through"),
    (e) => e,
  );
  assert.ok(CombinedGraphQLErrors.is(error), `${error}`);
  assert.equal(error.message, BAD_KEY_HTTP_MESSAGE);
  assert.equal(error.errors[0].extensions.code, "UNAUTHENTICATED");
  assert.equal(responses.at(-1).status, 401);

  const closed = await follow(client, { jobId: "any" }).then(() => assert.fail("subscribed"), (e) => e);
  assert.equal(closed.message, `Socket closed with event ${BAD_KEY_CLOSE.code} ${BAD_KEY_CLOSE.reason}`);
});
