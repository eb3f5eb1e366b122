// Compiles only if graphql-codegen typed operations.graphql the way a TypeScript client
// needs: documents carry their result and variable types, fields selected through
// interface fragments are typed on every member, scalars are string / unknown.
import { ApolloClient } from "@apollo/client";
import {
  CancelJobDocument,
  JobEventsDocument,
  SubmitJobDocument,
  type JobEventsSubscription,
  type V1JobStatus,
} from "./generated/graphql.js";

type JobEvent = JobEventsSubscription["jobEvents"];

/** What a UI shows for one event; the switch is exhaustive over the union. */
export function describe(event: JobEvent): string {
  switch (event.__typename) {
    case "V1JobQueued":
    case "V1JobStarted":
      return `#${event.seq} ${event.at}`; // seq: number, at: string (DateTime)
    case "V1OutputDelta":
      return event.text;
    case "V1Progress":
      return `${event.phase}: ${event.message}`;
    case "V1Heartbeat":
      // @ts-expect-error a heartbeat is not a V1JobEvent: it has no seq
      return String(event.seq);
    case "V1JobSucceeded":
      return `${event.job.status satisfies V1JobStatus} ${event.output} $${event.costUsd.toFixed(6)}`;
    case "V1JobFailed":
      return `${event.error.code}: ${event.error.message}`;
    case "V1JobCancelled":
      return `cancelled (${event.reason ?? "no reason"}), cancelRequested=${event.job.cancelRequested}`;
    case "V1NotFound":
    case "V1ServiceUnavailable":
      return `${event.code}: ${event.message}`;
    default:
      return event satisfies never;
  }
}

/** The typed documents work with Apollo Client as they are. */
export async function submitAndCancel(client: ApolloClient, topic: string): Promise<V1JobStatus | null> {
  const submitted = await client.mutate({
    mutation: SubmitJobDocument,
    variables: { input: { task: "echo", input: { topic } } },
  });
  const answer = submitted.data?.submitJob;
  if (answer?.__typename !== "V1SubmitJobSuccess") return null;
  const cancelled = await client.mutate({ mutation: CancelJobDocument, variables: { id: answer.job.id } });
  // @ts-expect-error variables are typed: jobId is required
  client.subscribe({ query: JobEventsDocument, variables: { after: 1 } });
  return cancelled.data?.cancelJob.__typename === "V1CancelJobSuccess" ? cancelled.data.cancelJob.job.status : null;
}
