// Which refusals of a pod patch mean "the pod of that name is another one, or gone" (skipped), and which are real
// failures (left to the reconcile's error path).
import { describe, expect, it } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import { podReplaced } from '../../operator/kube/writers.js';

describe('podReplaced', () => {
  it.each<[string, unknown, boolean]>([
    ['404: gone', new k8s.ApiException(404, 'not found', {}, {}), true],
    ['409: a failed uid precondition', new k8s.ApiException(409, 'Precondition failed: UID in precondition', {}, {}), true],
    ['422 naming metadata.uid', new k8s.ApiException(422, 'Unprocessable', '{"message":"Pod \\"web-0\\" is invalid: metadata.uid: Invalid value"}', {}), true],
    ['422 from an admission policy', new k8s.ApiException(422, 'Unprocessable', '{"message":"pods \\"web-0\\" is forbidden: ValidatingAdmissionPolicy denied"}', {}), false],
    ['422: annotations too large', new k8s.ApiException(422, 'Unprocessable', { message: 'metadata.annotations: Too long: must have at most 262144 bytes' }, {}), false],
    ['500', new k8s.ApiException(500, 'boom', {}, {}), false],
    ['not an API error', new Error('socket hang up'), false],
  ])('%s', (_what, e, replaced) => {
    expect(podReplaced(e)).toBe(replaced);
  });
});
