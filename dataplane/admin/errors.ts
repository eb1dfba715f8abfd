/** A refused admin call: the gRPC status code and the message the caller sees. */
import { status } from '@grpc/grpc-js';

export class AdminCallError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
  }
}
