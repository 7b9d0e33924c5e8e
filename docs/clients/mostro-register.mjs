// Register a device for a Mostro trade with an encrypted token, sealed the way the Mostro mobile app seals it.
//
//   node mostro-register.mjs <server-url> <trade-pubkey-hex> <fcm-token> [android|ios]
//
// or with the environment: PUSHSTR_URL, TRADE_PUBKEY, DEVICE_TOKEN, PLATFORM (arguments win; default android).
// Prints the server's JSON answer; exits 1 when the server refused the registration.
//
// The token is sealed to the server's key from GET /api/info: ECDH on secp256k1 with a fresh ephemeral key,
// HKDF-SHA256 over the raw x coordinate of the shared point (salt "mostro-push-v1", info
// "mostro-token-encryption"), ChaCha20-Poly1305 over a fixed 220-byte plaintext, no associated data.
import { chacha20poly1305 } from '@noble/ciphers/chacha.js'
import { randomBytes } from '@noble/ciphers/utils.js'
import { secp256k1 } from '@noble/curves/secp256k1.js'
import { hkdf } from '@noble/hashes/hkdf.js'
import { sha256 } from '@noble/hashes/sha2.js'
import { hexToBytes } from '@noble/hashes/utils.js'

const [
  serverUrl = process.env.PUSHSTR_URL,
  tradePubkey = process.env.TRADE_PUBKEY,
  deviceToken = process.env.DEVICE_TOKEN,
  platform = process.env.PLATFORM ?? 'android',
] = process.argv.slice(2)
if (!serverUrl || !tradePubkey || !deviceToken) {
  console.error('usage: node mostro-register.mjs <server-url> <trade-pubkey-hex> <fcm-token> [android|ios]')
  process.exit(2)
}

const PLATFORM_BYTES = { ios: 0x01, android: 0x02 }
const PADDED_PAYLOAD_SIZE = 220
const encoder = new TextEncoder()

/** The 281-byte encrypted token, base64: ephemeral pubkey (33) ‖ nonce (12) ‖ ciphertext (220) ‖ tag (16). */
function sealToken(serverPubkeyHex, platform, token) {
  const raw = encoder.encode(token)
  if (raw.length > PADDED_PAYLOAD_SIZE - 3) throw new Error('token too long to seal')
  const payload = randomBytes(PADDED_PAYLOAD_SIZE) // the bytes after the token stay random padding
  const platformByte = PLATFORM_BYTES[platform.toLowerCase()]
  if (platformByte === undefined) throw new Error('platform is android or ios')
  payload[0] = platformByte
  payload[1] = raw.length >> 8
  payload[2] = raw.length & 0xff
  payload.set(raw, 3)

  const ephemeral = secp256k1.utils.randomSecretKey()
  const shared = secp256k1.getSharedSecret(ephemeral, hexToBytes(serverPubkeyHex)) // compressed point, 33 bytes
  const key = hkdf(sha256, shared.slice(1), encoder.encode('mostro-push-v1'), encoder.encode('mostro-token-encryption'), 32)
  const nonce = randomBytes(12)
  const sealed = chacha20poly1305(key, nonce).encrypt(payload)

  const blob = new Uint8Array(33 + 12 + sealed.length)
  blob.set(secp256k1.getPublicKey(ephemeral, true), 0)
  blob.set(nonce, 33)
  blob.set(sealed, 45)
  return btoa(String.fromCharCode(...blob))
}

const info = await (await fetch(new URL('/api/info', serverUrl))).json()
const response = await fetch(new URL('/api/register', serverUrl), {
  method: 'POST',
  headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify({ trade_pubkey: tradePubkey, encrypted_token: sealToken(info.server_pubkey, platform, deviceToken) }),
})
const answer = await response.text()
console.log(answer)
// As the Mostro app reads it: 202, or 200 with success true.
process.exitCode = response.status === 202 || (response.status === 200 && JSON.parse(answer).success === true) ? 0 : 1
