"""A generated git repository for the benchmarks: FILES files of random
bytes (MB megabytes in all) in COMMITS commits, checked out on main.
    usage: gen-repo.py DIR FILES MB COMMITS
"""
import os, subprocess, sys
ws, files, mb, commits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
size = mb * 1024 * 1024 // files
subprocess.run(["git", "init", "-q", "-b", "main", ws], check=True)
fi = subprocess.Popen(["git", "-C", ws, "fast-import", "--quiet"], stdin=subprocess.PIPE)
w = fi.stdin.write
per = files // commits
n = 0
for c in range(commits):
    msg = b"commit %d\n" % c
    w(b"commit refs/heads/main\ncommitter bench <b@l> %d +0000\ndata %d\n%s" % (1700000000 + c, len(msg), msg))
    count = per if c < commits - 1 else files - n
    for _ in range(count):
        data = os.urandom(size)
        w(b"M 100644 inline d%03d/f%06d\ndata %d\n" % (n % 200, n, len(data)) + data + b"\n")
        n += 1
fi.stdin.close()
fi.wait()
subprocess.run(["git", "-C", ws, "reset", "-q", "--hard", "main"], check=True)
