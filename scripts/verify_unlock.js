#!/usr/bin/env node
// A facegate unlock verifier in JavaScript, using nothing but node's own crypto module.
//
//   mosquitto_sub -t facegate/front/unlock | node verify_unlock.js --door front --key front.pub
//
// Reads one unlock (a JWS compact serialisation) per line on stdin and prints, per line,
// "OK door=.. sub=.. seq=.. jti=.." or "REJECTED <reason>". The key file decides the
// algorithm: an Ed25519 public key (PEM) means EdDSA, a hex secret means HS256; a private
// key is refused (a controller never needs it). Checks, in this order: three base64url
// segments, header (alg of our key, typ), signature over the bytes as received, claims
// (door, sub, jti, seq, iat, exp), door, exp ahead, iat not in the future, jti unseen and
// seq increasing (replay). Node-RED: require() this file and call verifier.verify(token).
//
// --now EPOCH pins the clock (tests); --max-skew-s tolerates a controller clock behind.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const readline = require("node:readline");

const TYP = "facegate-unlock+jwt";
const MAX_TOKEN_BYTES = 4096;
const REPLAY_WINDOW = 4096;
const SEGMENT = /^[A-Za-z0-9_-]+$/;

class Rejected extends Error {
  constructor(reason) {
    super(reason);
    this.reason = reason;
  }
}

function loadKey(path) {
  const text = fs.readFileSync(path, "ascii");
  if (text.includes("PRIVATE KEY")) {
    throw new Error(`${path}: a private key; a controller holds only the public key`);
  }
  if (text.includes("-----BEGIN PUBLIC KEY-----")) {
    const key = crypto.createPublicKey(text);
    if (key.asymmetricKeyType !== "ed25519") throw new Error(`${path}: not an Ed25519 key`);
    return { alg: "EdDSA", key };
  }
  const hex = text.trim();
  if (!/^([0-9a-fA-F]{2}){32,}$/.test(hex)) throw new Error(`${path}: not a hex secret`);
  return { alg: "HS256", key: Buffer.from(hex, "hex") };
}

function decodeJson(segment, reason) {
  try {
    const value = JSON.parse(Buffer.from(segment, "base64url").toString("utf8"));
    if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error();
    return value;
  } catch {
    throw new Rejected(reason);
  }
}

function signatureHolds({ alg, key }, signingInput, signature) {
  if (alg === "EdDSA") {
    try {
      return crypto.verify(null, signingInput, key, signature);
    } catch {
      return false; // a signature of the wrong length throws instead of failing
    }
  }
  const mac = crypto.createHmac("sha256", key).update(signingInput).digest();
  return mac.length === signature.length && crypto.timingSafeEqual(mac, signature);
}

class UnlockVerifier {
  constructor(key, door, { clock = () => Date.now() / 1000, maxSkewS = 2 } = {}) {
    this.key = key;
    this.door = door;
    this.clock = clock;
    this.maxSkewS = maxSkewS;
    this.seen = new Set();
    this.lastSeq = -1;
  }

  verify(token) {
    if (Buffer.byteLength(token) > MAX_TOKEN_BYTES) throw new Rejected("too_large");
    const parts = token.split(".");
    if (parts.length !== 3 || !parts.every((p) => SEGMENT.test(p))) {
      throw new Rejected("malformed");
    }
    const header = decodeJson(parts[0], "bad_header");
    if (header.alg !== this.key.alg || header.typ !== TYP) throw new Rejected("bad_header");
    // The signature covers the two segments exactly as they arrived: nothing re-serialised.
    const signingInput = Buffer.from(`${parts[0]}.${parts[1]}`, "ascii");
    if (!signatureHolds(this.key, signingInput, Buffer.from(parts[2], "base64url"))) {
      throw new Rejected("bad_signature");
    }
    const claims = decodeJson(parts[1], "bad_json");
    for (const name of ["door", "sub", "jti"]) {
      if (typeof claims[name] !== "string" || claims[name] === "") throw new Rejected("bad_field");
    }
    for (const name of ["seq", "iat", "exp"]) {
      if (!Number.isFinite(claims[name])) throw new Rejected("bad_field");
    }
    if (!Number.isSafeInteger(claims.seq) || claims.seq < 0) throw new Rejected("bad_field");
    if (claims.door !== this.door) throw new Rejected("wrong_door");
    const now = this.clock();
    if (claims.exp <= now) throw new Rejected("expired");
    if (claims.iat > now + this.maxSkewS) throw new Rejected("future_iat");
    if (this.seen.has(claims.jti)) throw new Rejected("replayed");
    if (claims.seq <= this.lastSeq) throw new Rejected("stale_seq");
    this.seen.add(claims.jti);
    if (this.seen.size > REPLAY_WINDOW) this.seen.delete(this.seen.values().next().value);
    this.lastSeq = claims.seq;
    return claims;
  }
}

function parseArgs(argv) {
  const args = { maxSkewS: 2 };
  for (let i = 0; i < argv.length; i += 2) {
    const [name, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${name} needs a value`);
    if (name === "--door") args.door = value;
    else if (name === "--key") args.key = value;
    else if (name === "--now") args.now = Number(value);
    else if (name === "--max-skew-s") args.maxSkewS = Number(value);
    else throw new Error(`unknown option ${name}`);
  }
  if (!args.door || !args.key) throw new Error("usage: --door DOOR --key FILE [--now EPOCH]");
  return args;
}

function main() {
  let verifier;
  try {
    const args = parseArgs(process.argv.slice(2));
    const clock = args.now === undefined ? undefined : () => args.now;
    verifier = new UnlockVerifier(loadKey(args.key), args.door, {
      clock,
      maxSkewS: args.maxSkewS,
    });
  } catch (error) {
    console.error(`error: ${error.message}`);
    process.exit(2);
  }
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  lines.on("line", (line) => {
    try {
      const c = verifier.verify(line.trim());
      console.log(`OK door=${c.door} sub=${c.sub} seq=${c.seq} jti=${c.jti}`);
    } catch (error) {
      if (!(error instanceof Rejected)) throw error;
      console.log(`REJECTED ${error.reason}`);
    }
  });
}

module.exports = { UnlockVerifier, Rejected, loadKey };

if (require.main === module) main();
