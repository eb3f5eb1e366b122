// Apollo Client 4 with only an HttpLink: no WebSocket link at all. Apollo sends a
// subscription as a POST with `Accept: multipart/mixed;boundary="graphql";subscriptionSpec=1.0,
// application/json` and reads the multipart answer (on Node, with its fetch).
import assert from "node:assert/strict";
import { test } from "node:test";
import { ApolloClient, CombinedGraphQLErrors, HttpLink, InMemoryCache } from "@apollo/client";
import {
  BAD_KEY_HTTP_MESSAGE,
  TERMINAL,
  apiKey,
  assertSeqsFrom,
  fragment,
  httpUrl,
  operation,
  submitInput,
  within,
} from "./jobql.mjs";

const SUBMIT = operation("SubmitJob");
const EVENTS = operation("JobEvents");
const JOB_STATE = fragment("JobState");

const { possibleTypes } = await (await fetch(new URL("/v1/possible-types.json", httpUrl))).json();

// What Apollo sent for each request, to check the subscription went over multipart.
const sent = [];
async function recordingFetch(url, init) {
  sent.push({ accept: new Headers(init.headers).get("accept"), body: init.body });
  return fetch(url, init);
}

function apolloClient(key) {
  return new ApolloClient({
    link: new HttpLink({
      uri: httpUrl,
      headers: { Authorization: `Bearer ${key}` },
      fetch: recordingFetch,
    }),
    cache: new InMemoryCache({ possibleTypes }),
  });
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

test("a subscription over the HttpLink: multipart, every event once, in order, the cache learns the end", async () => {
  const client = apolloClient(apiKey);
  const job = await submit(client, "echo", { topic: "http only" });
  const events = await follow(client, { jobId: job.id });

  const request = sent.findLast((s) => String(s.body).includes("jobEvents"));
  assert.ok(request.accept.startsWith("multipart/mixed;boundary=graphql;subscriptionSpec=1.0,"), request.accept);
  assertSeqsFrom(1, events);
  assert.equal(events[0].__typename, "V1JobQueued");
  assert.equal(events.at(-1).__typename, "V1JobSucceeded");
  assert.equal(events.filter((e) => TERMINAL.has(e.__typename)).length, 1);
  assert.deepEqual(cachedJob(client, job.id), { __typename: "V1Job", id: job.id, status: "SUCCEEDED", cancelRequested: false });
});

test("resuming with `after` the last seq seen: nothing lost or repeated", async () => {
  const client = apolloClient(apiKey);
  const job = await submit(client, "slow", { topic: "resuming over http" });
  const first = await follow(client, { jobId: job.id }, (e, seen) => e.__typename === "V1OutputDelta" && seen.length >= 3);
  const lastSeq = first.at(-1).seq;
  assert.ok(!TERMINAL.has(first.at(-1).__typename), "the job was over before the unsubscribe");

  const rest = await follow(client, { jobId: job.id, after: lastSeq });
  assertSeqsFrom(lastSeq + 1, rest);
  assertSeqsFrom(1, [...first, ...rest]);
  assert.equal(rest.at(-1).__typename, "V1JobSucceeded");
});

test("a bad key: the subscription fails with the server's message", async () => {
  const client = apolloClient("jq_not-a-key");
  const error = await follow(client, { jobId: "any" }).then(
    () => assert.fail("subscribed"),
    (e) => e,
  );
  // The 401's JSON body is read as GraphQL errors, as for a query.
  assert.ok(CombinedGraphQLErrors.is(error), `${error.name}: ${error.message}`);
  assert.equal(error.message, BAD_KEY_HTTP_MESSAGE);
  assert.equal(error.errors[0].extensions.code, "UNAUTHENTICATED");
});
