#!/usr/bin/env python3
"""The benchmark workload, from a fixed seed: blocklists in each server's native form and
the query files (benches/peers.sh and benches/profile.sh share it).

    python3 benches/workload.py DIR BIG

DIR gets small.list / big.list (telesink), unbound-*.conf, dnsmasq-*.conf, the query
files blocked.q, big-blocked.q, cached.q, miss.q, mix.q, probe-big, and the knotd zone.
"""
import random, sys
work, big = sys.argv[1], int(sys.argv[2])
r = random.Random(20261126)
words = ["ads","track","metrics","telemetry","stats","pixel","cdn","api","events","collect","beacon","log",
         "sync","edge","data","report","watson","vortex","nexus","self","browser","pipe","mobile","settings"]
tlds = ["com","net","org","io","de","nl","co.uk","info","fr","xyz"]
def names(n, seen):
    out = []
    while len(out) < n:
        labels = [f"{r.choice(words)}{r.randrange(1000)}" for _ in range(1 + r.randrange(3))]
        name = ".".join(labels + [f"{r.choice(words)}-{r.randrange(100000)}", r.choice(tlds)])
        if name not in seen:
            seen.add(name); out.append(name)
    return out
seen = set()
small = names(1000, seen)
large = names(big, seen) if big else []
def write_lists(tag, ns):
    suffix = set(range(0, len(ns), 20))
    with open(f"{work}/{tag}.list", "w") as f:
        for i, n in enumerate(ns):
            f.write(("*." if i in suffix else "") + n + "\n")
    with open(f"{work}/unbound-{tag}.conf", "w") as f:
        f.write("server:\n")
        for n in ns:
            f.write(f'  local-zone: "{n}." always_null\n')
    with open(f"{work}/dnsmasq-{tag}.conf", "w") as f:
        for n in ns:
            f.write(f"address=/{n}/0.0.0.0\naddress=/{n}/::\n")
    qs = [("sub." if i in suffix else "") + n for i, n in enumerate(ns)]
    return qs
blocked = write_lists("small", small)
with open(f"{work}/blocked.q", "w") as f:
    f.writelines(f"{q} A\n" for q in blocked)
if big:
    bq = write_lists("big", large)
    sample = r.sample(bq, min(100000, len(bq)))
    with open(f"{work}/big-blocked.q", "w") as f:
        f.writelines(f"{q} A\n" for q in sample)
    with open(f"{work}/probe-big", "w") as f:
        f.write(bq[1] + "\n")
cached = [f"h{i}.bench.test" for i in range(1000)]
with open(f"{work}/cached.q", "w") as f:
    f.writelines(f"{q} A\n" for q in cached)
with open(f"{work}/miss.q", "w") as f:
    f.writelines(f"m{i}.miss.bench.test A\n" for i in range(300000))
with open(f"{work}/mix.q", "w") as f:
    for i in range(100000):
        x = r.random()
        q = r.choice(blocked) if x < 0.30 else (r.choice(cached) if x < 0.95 else f"x{i}.miss.bench.test")
        f.write(f"{q} A\n")
with open(f"{work}/zone", "w") as f:
    f.write("$ORIGIN bench.test.\n$TTL 3600\n@ SOA ns h 1 3600 600 86400 3600\n@ NS ns\nns A 127.0.0.1\n")
    f.write("stale A 192.0.2.250\n*.miss 0 A 192.0.2.251\n")
    for i in range(1000):
        f.write(f"h{i} A 192.0.2.{i % 250 + 1}\n")
