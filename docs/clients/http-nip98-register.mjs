// Register a device with pushstr over HTTP, authorized by NIP-98 (a kind 27235 event signed by the user's key).
//
//   node http-nip98-register.mjs <server-url> <user-secret-hex> <device-token> [platform]
//
// or with the environment: PUSHSTR_URL, NOSTR_SECRET_KEY, DEVICE_TOKEN, PLATFORM (arguments win).
// <platform> is ios (or apns), android (or fcm), unifiedpush (or up) or webpush; default ios.
// Prints the server's JSON answer; exits 1 when the server refused the registration.
import { finalizeEvent, getPublicKey, nip19, nip98 } from 'nostr-tools'
import { hexToBytes } from 'nostr-tools/utils'

const [
  serverUrl = process.env.PUSHSTR_URL,
  secretHex = process.env.NOSTR_SECRET_KEY,
  deviceToken = process.env.DEVICE_TOKEN,
  platform = process.env.PLATFORM ?? 'ios',
] = process.argv.slice(2)
if (!serverUrl || !secretHex || !deviceToken) {
  console.error('usage: node http-nip98-register.mjs <server-url> <user-secret-hex> <device-token> [platform]')
  process.exit(2)
}

const secretKey = hexToBytes(secretHex)
const url = new URL('/register', serverUrl).href // the `u` tag: the absolute URL this request goes to
const body = { npub: nip19.npubEncode(getPublicKey(secretKey)), device_token: deviceToken, platform }

// getToken hashes JSON.stringify(body) into the `payload` tag, so the request must send exactly that string.
const authorization = await nip98.getToken(url, 'POST', (event) => finalizeEvent(event, secretKey), true, body)
const response = await fetch(url, {
  method: 'POST',
  headers: { Authorization: authorization, 'Content-Type': 'application/json' },
  body: JSON.stringify(body),
})
console.log(await response.text())
process.exitCode = response.ok ? 0 : 1
