#!/usr/bin/python3
"""The OAuth2 credentials of scripts/bench, new every run, written into DIR:

  jwks.json           the Hydra double's JWKS: one RS256 key, RSA-4096 (Hydra's default), with
                      its kid, alg and use, as Hydra publishes it
  jwt                 an access token signed with that key, with Hydra's claims (iss ISSUER,
                      client_id, scp, jti, ...), exp in 2099: valid for the whole run
  opaque              an opaque access token in Hydra's format, ory_at_<43>.<43> (base64url)
  introspection.json  the double's introspection answer for any token: active, with the
                      members Hydra sends (RFC 7662 and Hydra's own), the same subject and exp

  /usr/bin/python3 tokens.py DIR ISSUER

Needs PyJWT and cryptography (Debian's python3-jwt and python3-cryptography, hence
/usr/bin/python3, as t/lib/hydra-double).
"""
import json
import os
import secrets
import sys
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

SUBJECT = "5b4e3a59-3f5e-4b26-9f57-b1ab8c6b1f9a"
CLIENT = "bench-client"
EXP = 4070908800  # 2099-01-01T00:00:00Z


def main(out, issuer):
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    kid = str(uuid.uuid4())
    jwk = RSAAlgorithm.to_jwk(key.public_key())
    jwk = json.loads(jwk) if isinstance(jwk, str) else jwk
    jwk.update(kid=kid, alg="RS256", use="sig")
    now = int(time.time()) - 60
    claims = {
        "iss": issuer,
        "sub": SUBJECT,
        "aud": ["api.example.com"],
        "exp": EXP,
        "iat": now,
        "nbf": now,
        "jti": str(uuid.uuid4()),
        "client_id": CLIENT,
        "scp": ["openid", "offline"],
        "ext": {},
    }
    token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})
    # The double answers to `return 200 '...'`: the JSON must hold no quote and no $.
    answer = {
        "active": True,
        "scope": "openid offline",
        "client_id": CLIENT,
        "sub": SUBJECT,
        "obfuscated_subject": "",
        "exp": EXP,
        "iat": now,
        "nbf": now,
        "username": "",
        "aud": ["api.example.com"],
        "iss": issuer,
        "token_type": "Bearer",
        "token_use": "access_token",
        "ext": {},
    }
    files = {
        "jwks.json": json.dumps({"keys": [jwk]}, separators=(",", ":")),
        "jwt": token,
        "opaque": f"ory_at_{secrets.token_urlsafe(32)}.{secrets.token_urlsafe(32)}",
        "introspection.json": json.dumps(answer, separators=(",", ":")),
    }
    for name, text in files.items():
        if "'" in text or "$" in text:
            sys.exit(f"tokens.py: {name} holds a quote or a $")
        with open(os.path.join(out, name), "w") as f:
            f.write(text)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
