/**
 * A data plane's identity on the config channel: its client certificate's CN plus the node its Hello names
 * (`quiclb-dataplane@node-a`; the CN alone when the Hello names no node). The Helm chart gives every data plane of
 * the DaemonSet one certificate, so the CN alone would make the nodes replace each other's streams; with the node
 * in the key, a reconnect of the same data plane still replaces its old stream and other nodes coexist.
 *
 * The node name is what the data plane says, not something its certificate proves (docs/config-channel.md, Trust).
 */
export function dataPlaneIdentity(certificateName: string, nodeName: string): string {
  return nodeName === '' ? certificateName : `${certificateName}@${nodeName}`;
}
