"""A throwaway PostgreSQL cluster for the tests: initdb in a directory of its own, a free loopback port, run as a
non-root user (PostgreSQL refuses to run as root; as root we run it as the `postgres` user that Debian's package
creates), stopped and deleted at the end.

As a program: `pg_cluster.py start DIR` prints the cluster's URL; `pg_cluster.py stop DIR` stops it.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time


def _bin(name):
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"{name} not found: install PostgreSQL (scripts/setup does: apt-get install postgresql)")
    return candidates[-1]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root):
        self.root = os.path.abspath(root)
        self.data = os.path.join(self.root, "data")
        self.port_file = os.path.join(self.root, "port")
        self.user = None
        if os.geteuid() == 0:
            self.user = pwd.getpwnam("postgres")

    def _run(self, argv, check=True, **kwargs):
        if self.user is not None:
            argv = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--init-groups", "--"] + argv
        return subprocess.run(argv, check=check, capture_output=True, text=True, **kwargs)

    @property
    def port(self):
        with open(self.port_file) as f:
            return int(f.read())

    @property
    def url(self):
        return f"postgres://corral@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def create(self):
        os.makedirs(self.root, exist_ok=True)
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
            # The parent may be a 0700 temporary directory of root's: the cluster's user must reach its own.
            parent = os.path.dirname(self.root)
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
        self._run([_bin("initdb"), "-D", self.data, "-U", "corral", "-A", "trust", "--no-sync", "-E", "UTF8"])
        with open(self.port_file, "w") as f:
            f.write(str(_free_port()))

    def start(self):
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run([_bin("pg_ctl"), "-D", self.data, "-o", options, "-l", os.path.join(self.root, "log"), "-w", "-t", "30", "start"])
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not start listening")

    def stop(self, mode="fast"):
        self._run([_bin("pg_ctl"), "-D", self.data, "-m", mode, "-w", "stop"], check=False)

    def destroy(self):
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def sql(self, statement):
        """Runs one statement with psql and returns its output (tuples only, unaligned)."""
        return subprocess.run(
            [_bin("psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U", "corral", "-d", "postgres", "-c", statement],
            check=True, capture_output=True, text=True).stdout


def main(argv):
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print("usage: pg_cluster.py start|stop DIR", file=sys.stderr)
        return 2
    cluster = Cluster(argv[2])
    if argv[1] == "start":
        cluster.create()
        cluster.start()
        print(cluster.url)
    else:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
