import http from 'node:http'

/** A local stand-in for the notification webhook (NOTIFY_WEBHOOK_URL): every body it receives, in order. */
export interface HookServer {
  url: string
  received: string[]
  close(): void
}

/** On `host` (default loopback; Docker's bridge address for a receiver a droplet container reaches). */
export async function startHookServer(host = '127.0.0.1'): Promise<HookServer> {
  const received: string[] = []
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (d: Buffer) => (body += d.toString()))
    req.on('end', () => {
      received.push(body)
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, host, resolve))
  return { url: `http://${host}:${(server.address() as { port: number }).port}/hook`, received, close: () => server.close() }
}
