// A browser app on another origin than jobql: Apollo Client submits over HTTP (a CORS
// preflight first: Authorization and a JSON body are not "simple"), follows the job over
// graphql-ws, and reports what it saw in window.jobqlResult. Bundled by esbuild
// (browser.test.mjs); jobql's URL and key come from the page's query string.
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { OperationTypeNode } from "graphql";
import { CloseCode, createClient } from "graphql-ws";
// The checked-in possibleTypes, bundled with the app.
import { possibleTypes } from "../../../jobql/schema/v1/possible-types.json";

const params = new URLSearchParams(location.search);
const apiKey = params.get("key");

const SUBMIT = gql`
  mutation SubmitJob($input: V1SubmitJobInput!) {
    submitJob(input: $input) {
      __typename
      ... on V1SubmitJobSuccess { job { id status cancelRequested } }
      ... on V1Error { code message }
    }
  }
`;

const EVENTS = gql`
  subscription JobEvents($jobId: ID!, $after: Int) {
    jobEvents(jobId: $jobId, after: $after) {
      __typename
      ... on V1JobEvent { seq }
      ... on V1OutputDelta { text }
      ... on V1JobFinished { job { id status cancelRequested } }
      ... on V1Error { code message }
    }
  }
`;

const JOB_STATE = gql`
  fragment JobState on V1Job { id status cancelRequested }
`;

const wsClient = createClient({
  url: params.get("ws"),
  connectionParams: { Authorization: `Bearer ${apiKey}` },
  shouldRetry: (event) =>
    typeof event === "object" && event !== null && "code" in event && event.code !== CloseCode.Forbidden,
  retryAttempts: 0,
});

const client = new ApolloClient({
  link: ApolloLink.split(
    ({ operationType }) => operationType === OperationTypeNode.SUBSCRIPTION,
    new GraphQLWsLink(wsClient),
    new HttpLink({ uri: params.get("http"), headers: { Authorization: `Bearer ${apiKey}` } }),
  ),
  cache: new InMemoryCache({ possibleTypes }),
});

function follow(jobId) {
  const events = [];
  return new Promise((resolve, reject) => {
    client.subscribe({ query: EVENTS, variables: { jobId } }).subscribe({
      next: ({ data, error }) => (error ? reject(error) : events.push(data.jobEvents)),
      error: reject,
      complete: () => resolve(events),
    });
  });
}

async function run() {
  const result = { origin: location.origin };
  try {
    const { data } = await client.mutate({
      mutation: SUBMIT,
      variables: { input: { task: "echo", input: { topic: "the browser" } } },
    });
    result.submitted = data.submitJob;
  } catch (error) {
    result.submitError = error.message;
  }
  // Follow the job; after a failed submit, an id that was never handed out.
  const jobId = result.submitted?.job?.id ?? "00000000-0000-0000-0000-000000000000";
  try {
    const events = await follow(jobId);
    result.events = events.map((e) => ({ type: e.__typename, seq: e.seq ?? null }));
    result.terminal = events.at(-1);
    const id = client.cache.identify({ __typename: "V1Job", id: jobId });
    result.cached = client.cache.readFragment({ id, fragment: JOB_STATE });
  } catch (error) {
    result.streamError = error.message;
  }
  return result;
}

run()
  .catch((error) => ({ crashed: String(error?.stack ?? error) }))
  .then((result) => {
    wsClient.dispose();
    window.jobqlResult = result;
    document.querySelector("#result").textContent = JSON.stringify(result, null, 2);
  });
