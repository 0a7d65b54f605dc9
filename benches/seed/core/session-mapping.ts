// Shim (not part of the seed): the seed's missing `core/session-mapping.ts`, reduced to what the seed calls:
// `ensure(key).claudeSessionUuid` and `touch(key)`. An in-memory map of session key -> Claude
// conversation id and workspace, optionally loaded at start from a JSON file
// `{ "<session key>": { "claudeSessionUuid": "...", "workspace": "..." }, ... }`.
// A key not in it gets a fresh id, as a first-seen session would (the agent then refuses `--resume` on it:
// one of the seed's known defects, left as it is). Nothing is written back.
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'

export interface SessionRecord {
  openclawSessionKey: string
  claudeSessionUuid: string
  workspace?: string
  lastUsedAt: number
}

export class SessionMapping {
  private byKey = new Map<string, SessionRecord>()

  constructor(file?: string) {
    if (!file) return
    const entries = JSON.parse(readFileSync(file, 'utf8')) as Record<string, { claudeSessionUuid: string; workspace?: string }>
    for (const [key, rec] of Object.entries(entries)) {
      this.byKey.set(key, { openclawSessionKey: key, claudeSessionUuid: rec.claudeSessionUuid, workspace: rec.workspace, lastUsedAt: 0 })
    }
  }

  ensure(openclawSessionKey: string): SessionRecord {
    let rec = this.byKey.get(openclawSessionKey)
    if (!rec) {
      rec = { openclawSessionKey, claudeSessionUuid: randomUUID(), lastUsedAt: Date.now() }
      this.byKey.set(openclawSessionKey, rec)
    }
    return rec
  }

  touch(openclawSessionKey: string): void {
    const rec = this.byKey.get(openclawSessionKey)
    if (rec) rec.lastUsedAt = Date.now()
  }

  get(openclawSessionKey: string): SessionRecord | undefined {
    return this.byKey.get(openclawSessionKey)
  }
}
