#!/usr/bin/env python3
"""Where a confirmed stream publish's time goes, from the syscalls of both ends.

    scripts/publish-stages.py broker BROKER.data CLIENT.data
    scripts/publish-stages.py ceiling CEILING.data

The .data files are `perf record -k CLOCK_MONOTONIC` of raw_syscalls, as
scripts/publish-trace.sh makes them (one clock for every thread and both processes:
`perf trace`'s own timestamps are per CPU and disagree across threads by up to
milliseconds on this VM). Messages are followed by their position in each byte stream
(1,056 B a publish on the native protocol, 1,028 B a frame of scripts/publish-ceiling.c;
a stream record's bytes in the segment are calibrated from the totals), so the
broker's recording must begin before the client publishes (publish-trace.sh
predeclares the stream and starts it then). Prints, over the middle of the run
(40%-90% of the client's sending time):

- per sampled message, the time of each stage: client send -> read by the broker ->
  written to the segment -> its fsync's start and end -> the confirm written to the
  socket -> read by the client;
- per fsync (a group): records, its time, fsyncs per 1,000 messages, the share of
  groups under 100 records;
- the fsyncing thread's time: fsync, waiting for work, writing;
- how many records the broker had read and not yet handed to the writer when a group
  was written (they wait one more fsync).
"""
import bisect
import collections
import re
import statistics
import subprocess
import sys

NAMES = {0: 'read', 1: 'write', 18: 'pwrite64', 20: 'writev', 44: 'sendto', 45: 'recvfrom',
         75: 'fdatasync', 202: 'futex'}
ENTER = re.compile(r'^\s*(.+?)\s+(\d+)\s+([\d.]+):\s+raw_syscalls:sys_enter:\s+NR (\d+) \(([0-9a-f]+)')
EXIT = re.compile(r'^\s*(.+?)\s+(\d+)\s+([\d.]+):\s+raw_syscalls:sys_exit:\s+NR (\d+) = (-?\d+)')


def load(path):
    """The syscalls of a recording: dicts of t, end (ms), comm, tid, name, fd, ret."""
    out = subprocess.run(['perf', 'script', '--ns', '-i', path, '-F', 'comm,tid,time,event,trace'],
                         capture_output=True, text=True).stdout
    pending, events = {}, []
    for line in out.splitlines():
        m = ENTER.match(line)
        if m:
            _, tid, t, nr, a0 = m.groups()
            pending[tid] = (int(nr), float(t) * 1000, str(int(a0, 16)))
            continue
        m = EXIT.match(line)
        if m:
            comm, tid, t, nr, ret = m.groups()
            p = pending.pop(tid, None)
            if p is None or p[0] != int(nr) or int(nr) not in NAMES:
                continue
            events.append(dict(t=p[1], end=float(t) * 1000, comm=comm.strip(), tid=tid,
                               name=NAMES[int(nr)], fd=p[2], ret=int(ret)))
    events.sort(key=lambda e: e['t'])
    return events


def cumulative(events, unit):
    ends, counts, total = [], [], 0
    for e in events:
        total += e['ret']
        ends.append(e['end'])
        counts.append(int(total // unit))
    return ends, counts


def when(ends, counts, k):
    """When message k (0-based) had passed: the end of the call that carried its last byte."""
    i = bisect.bisect_left(counts, k + 1)
    return ends[i] if i < len(ends) else None


def first_after(times, t):
    i = bisect.bisect_left(times, t)
    return times[i] if i < len(times) else None


def summary(xs):
    xs = sorted(xs)
    if not xs:
        return 'n/a'
    at = lambda f: xs[min(len(xs) - 1, int(f * len(xs)))]
    return f"mean {statistics.mean(xs):.3f} p50 {at(.5):.3f} p90 {at(.9):.3f}"


def busiest_fd(events, names, pred=lambda e: True):
    by = collections.Counter()
    for e in events:
        if e['name'] in names and e['ret'] > 0 and pred(e):
            by[e['fd']] += e['ret']
    return max(by, key=by.get)


def main():
    mode = sys.argv[1]
    if mode == 'broker':
        b, c = load(sys.argv[2]), load(sys.argv[3])
        wire = 1056
        cfd = busiest_fd(c, ('sendto', 'write', 'writev'))
        bfd = busiest_fd(b, ('recvfrom', 'read'), lambda e: 'actix' in e['comm'])
        send = [e for e in c if e['fd'] == cfd and e['name'] in ('sendto', 'write', 'writev') and e['ret'] > 0]
        client_reads = [e['end'] for e in c if e['fd'] == cfd and e['name'] in ('recvfrom', 'read') and e['ret'] > 0]
        reads = [e for e in b if e['fd'] == bfd and e['name'] in ('recvfrom', 'read') and e['ret'] > 0]
        confirms = [e['t'] for e in b if e['fd'] == bfd and e['name'] in ('writev', 'write', 'sendto') and e['ret'] > 0]
        syncer = [e for e in b if e['comm'].startswith('stream-')]
        writes = [e for e in syncer if e['name'] == 'writev']
        fsyncs = [e for e in syncer if e['name'] == 'fdatasync']
        record = sum(e['ret'] for e in writes) / max(1, sum(e['ret'] for e in reads) // wire)
    else:
        b = load(sys.argv[2])
        wire = record = 1028
        send = [e for e in b if e['name'] == 'write' and e['ret'] >= wire]
        producer = send[0]['tid']
        send = [e for e in send if e['tid'] == producer]
        reads = [e for e in b if e['name'] == 'read' and e['ret'] > 0 and e['tid'] != producer]
        writes = [e for e in b if e['name'] == 'pwrite64']
        fsyncs = [e for e in b if e['name'] == 'fdatasync']
        confirms = [e['t'] for e in b if e['name'] == 'write' and e['ret'] == 8 and e['tid'] != producer]
        client_reads = [e['end'] for e in b if e['name'] == 'recvfrom' and e['ret'] > 0]
        syncer = [e for e in b if e['tid'] in {f['tid'] for f in fsyncs}]
    sent_at, sent = cumulative(send, wire)
    read_at, read = cumulative(reads, wire)
    written_at, written = cumulative(writes, record)
    fs_start = [e['t'] for e in fsyncs]
    fs_end = [e['end'] for e in fsyncs]
    t0, t1 = sent_at[0], sent_at[-1]
    lo, hi = t0 + 0.4 * (t1 - t0), t0 + 0.9 * (t1 - t0)

    stages = []
    for k in range(0, sent[-1], 37):
        a = when(sent_at, sent, k)
        if a is None or not lo <= a <= hi:
            continue
        r, w = when(read_at, read, k), when(written_at, written, k)
        if r is None or w is None:
            continue
        i = bisect.bisect_left(fs_start, w)  # the first fsync begun after its write
        if i >= len(fsyncs):
            continue
        cw = first_after(confirms, fs_end[i])
        cr = first_after(client_reads, cw) if cw is not None else None
        if cr is None:
            continue
        stages.append((r - a, w - r, fs_start[i] - w, fs_end[i] - fs_start[i], cw - fs_end[i], cr - cw, cr - a))
    names = ['client send -> broker read', 'read -> written to the segment', 'written -> its fsync begins',
             'its fsync', 'fsync end -> confirm written', 'confirm written -> client read',
             'send -> confirm read (all)']
    n_lo = read[bisect.bisect_left(read_at, lo)]
    n_hi = read[bisect.bisect_left(read_at, hi)]
    print(f"{mode}: {(n_hi - n_lo) / (hi - lo):.0f}k msg/s read in the middle {hi - lo:.0f} ms; "
          f"{len(stages)} messages sampled (ms)")
    for j, n in enumerate(names):
        print(f"  {n:32s} {summary([s[j] for s in stages])}")

    groups, before = [], 0
    for e in fsyncs:
        j = bisect.bisect_right(written_at, e['t']) - 1
        now = written[j] if j >= 0 else 0
        if lo <= e['t'] <= hi:
            groups.append((now - before, e['end'] - e['t']))
        before = now
    sizes = [g[0] for g in groups]
    print(f"  groups: records per fsync {summary(sizes)}; fsync ms {summary([g[1] for g in groups])}")
    print(f"  fsyncs per 1,000 messages {len(groups) / max(1, sum(sizes)) * 1000:.2f}; "
          f"groups under 100 records {sum(1 for s in sizes if s < 100) / max(1, len(sizes)) * 100:.0f}%")

    def share(evs):
        return sum(min(e['end'], hi) - max(e['t'], lo) for e in evs if e['end'] > lo and e['t'] < hi) / (hi - lo) * 100
    fsyncing = [e for e in syncer if e['tid'] in {f['tid'] for f in fsyncs}]
    waits = [e for e in fsyncing if e['name'] == 'futex' and e['end'] - e['t'] > 0.005]
    print(f"  fsyncing thread: fsync {share([e for e in fsyncing if e['name'] == 'fdatasync']):.0f}%, "
          f"waiting for work {share(waits):.0f}%, "
          f"writing {share([e for e in fsyncing if e['name'] in ('writev', 'pwrite64')]):.0f}%")
    if mode == 'broker':
        left = []
        for i, e in enumerate(writes):
            if lo <= e['t'] <= hi:
                j = bisect.bisect_right(read_at, e['t']) - 1
                left.append(max(0, (read[j] if j >= 0 else 0) - written[i]))
        print(f"  read but not yet at the writer when a group was written: records {summary(left)}")


main()
