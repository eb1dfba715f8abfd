/** Limits of the admin API's contract (proto/quiclb/v1/admin.proto), shared by the server and the `quiclb admin` client. */

/** UpdateConfigRequest.config_yaml: at most 1 MiB (the .proto says so). */
export const MAX_CONFIG_YAML_BYTES = 1024 * 1024;
