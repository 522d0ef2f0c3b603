// "Events/s now", measured by the events' own timestamps rather than by when batches arrive:
// delivery is bursty (a server catching up sends a second of events in one frame), but the
// timestamps say when events happened, so the reading stays steady.

export class RateMeter {
  constructor({ windowMs = 2000, slotMs = 100, maxLagMs = 1000, futureMs = 5000 } = {}) {
    this.windowMs = windowMs
    this.slotMs = slotMs
    this.maxLagMs = maxLagMs // data this much older than the server's "now" means the stream slowed
    this.futureMs = futureMs
    this.slots = new Map() // slot start (ms) -> events
    this.maxTs = null
    this.firstSlot = null
  }

  /** `serverNow`: the current time on the events' clock (guards against far-future stamps). */
  add(events, serverNow) {
    const slot = this.slotMs
    for (const ev of events) {
      const t = Date.parse(ev.ts)
      if (!Number.isFinite(t) || t > serverNow + this.futureMs) continue
      const k = Math.floor(t / slot) * slot
      this.slots.set(k, (this.slots.get(k) ?? 0) + 1)
      if (this.maxTs === null || t > this.maxTs) this.maxTs = t
      if (this.firstSlot === null) this.firstSlot = k
    }
  }

  /** Forget coverage (after a disconnect the meter must not average over the hole). */
  reset() {
    this.slots.clear()
    this.maxTs = null
    this.firstSlot = null
  }

  /** Events per second over the newest complete `windowMs` of data; null: too little data yet. */
  rate(serverNow) {
    if (this.maxTs === null) return null
    const slot = this.slotMs
    const ref = Math.max(this.maxTs, serverNow - this.maxLagMs)
    const end = Math.floor(ref / slot) * slot // the newest slot is still filling: leave it out
    const start = end - this.windowMs
    let n = 0
    for (const [k, c] of this.slots) {
      if (k < start) this.slots.delete(k)
      else if (k < end) n += c
    }
    const covered = end - Math.max(start, Math.min(this.firstSlot, end))
    if (covered < 500) return null
    return n / (covered / 1000)
  }
}
