import dayjs from 'dayjs'
import duration from 'dayjs/plugin/duration.js'
import utc from 'dayjs/plugin/utc.js'

// dayjs with the plugins the toolkit uses, extended once: every date the toolkit prints or
// computes is UTC (the contract's log lines, backup ids, retention), whatever the droplet's zone.
dayjs.extend(utc)
dayjs.extend(duration)

export { dayjs }
