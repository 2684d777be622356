#!/usr/bin/python3
"""The runbook's per-secret decrypt step (a stand-in for its Go program):
reads an envelope on stdin, the hex AES key from the file named by argv[1],
prints the plaintext."""
import base64
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

key = bytes.fromhex(open(sys.argv[1]).read().strip())
raw = base64.b64decode(sys.stdin.read().strip())
sys.stdout.write(AESGCM(key).decrypt(raw[:12], raw[12:], None).decode())
