// Entry point (not part of the seed; stands in for its missing `index.ts` standalone mode): starts the seed's
// bridge server and process manager on 127.0.0.1 and prints a ready line to standard error.
//
//   bun main.ts [--port N] [--ws-port N]
//
// Environment (arguments win): SEED_PORT, SEED_WS_PORT (0 or unset: free ports picked here, since the WS
// port must be known before the agents are spawned), SEED_SESSIONS (a session-mapping JSON file, see
// core/session-mapping.ts), SEED_MAX_PROCESSES (default 1000), SEED_PERMISSION_MODE (default
// bypassPermissions). The agent is `claude` from PATH, as the seed spawns it; its working directory is the
// mapping's workspace for the session, else this process's.
import net from 'node:net'
import { startBridgeServer } from './web/bridge-server.js'
import { ProcessManager } from './core/process-manager.js'
import { SessionMapping } from './core/session-mapping.js'
import type { SynthesisConfig } from './core/config.js'

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name)
  return i >= 0 ? process.argv[i + 1] : undefined
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })
}

const wanted = (v: string | undefined) => Number(v ?? 0)
const bridgePort = wanted(arg('--port') ?? process.env.SEED_PORT) || await freePort()
const channelWsPort = wanted(arg('--ws-port') ?? process.env.SEED_WS_PORT) || await freePort()

const config: SynthesisConfig = {
  bridgePort,
  channelWsPort,
  channelName: 'synthesis',
  permissionMode: process.env.SEED_PERMISSION_MODE ?? 'bypassPermissions',
  maxProcesses: Number(process.env.SEED_MAX_PROCESSES ?? 1000),
  idleKillMs: 60 * 60 * 1000,
}
const mapping = new SessionMapping(process.env.SEED_SESSIONS)
const processManager = new ProcessManager({ config, mapping })
const bridge = startBridgeServer({
  config,
  mapping,
  processManager,
  // The session key is the agent id when no chat id is sent (the seed's rule).
  resolveAgent: agentId => {
    const workspace = mapping.get(agentId)?.workspace
    return workspace ? { workspace } : null
  },
})

await Promise.all([
  new Promise(r => bridge.httpServer.listening ? r(null) : bridge.httpServer.once('listening', r)),
  new Promise(r => bridge.wss.once('listening', r)),
])
process.stderr.write(`[seed] bridge ready: POST http://127.0.0.1:${bridgePort}/v1/chat/completions (WS 127.0.0.1:${channelWsPort}/bridge)\n`)

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, async () => {
    await processManager.shutdown()
    process.exit(0)
  })
}
