// Shim (not part of the seed): the fields of the seed's missing `core/config.ts` that
// `web/bridge-server.ts` and `core/process-manager.ts` read, and nothing else.
export interface SynthesisConfig {
  /** HTTP port of /v1/chat/completions (127.0.0.1). */
  bridgePort: number
  /** WebSocket port of /bridge (127.0.0.1), put into each agent's SYNTHESIS_WS_URL. */
  channelWsPort: number
  /** The channel server's name: `--channels server:<channelName>`. */
  channelName: string
  /** `--permission-mode` of every spawned `claude`. */
  permissionMode: string
  /** At most this many live `claude` processes; the oldest idle one is evicted past it. */
  maxProcesses: number
  /** A process idle this long is killed (swept once a minute). */
  idleKillMs: number
}
