"""Test certificates made with the openssl CLI at start-up.

Owns the certificate files: a throwaway CA, a server certificate for 127.0.0.1 and
localhost, and one for a host name no client asks for (wrong.example.invalid), both
signed by that CA. A client that trusts ca.pem must accept the first and refuse the
second on host-name grounds alone. Serving them is server.py's job.
"""
import os
import ssl
import subprocess

DAYS = "2"
GOOD_SAN = "IP:127.0.0.1,DNS:localhost"
WRONG_SAN = "DNS:wrong.example.invalid"


def openssl(*args, cwd):
    subprocess.run(("openssl",) + args, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make(directory):
    """Writes ca.pem, server.pem/.key and wrong.pem/.key into directory; returns their paths."""
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", DAYS,
            "-subj", "/CN=dlemu test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    leaf(directory, "server", "127.0.0.1", GOOD_SAN, ec)
    leaf(directory, "wrong", "wrong.example.invalid", WRONG_SAN, ec)
    files = {"ca": "ca.pem", "server": "server.pem", "server_key": "server.key",
             "wrong": "wrong.pem", "wrong_key": "wrong.key"}
    return {k: os.path.join(directory, v) for k, v in files.items()}


def leaf(directory, name, cn, san, ec):
    ext = os.path.join(directory, name + ".ext")
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=%s\n" % san)
    openssl("req", *ec, "-keyout", name + ".key", "-out", name + ".csr",
            "-subj", "/CN=" + cn, cwd=directory)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", DAYS, "-out", name + ".pem", "-extfile", ext, cwd=directory)


def server_context(cert, key):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx
