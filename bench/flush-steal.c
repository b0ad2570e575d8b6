/* What a disk flush costs this machine's CPUs (BENCHMARKS.md, native chat, session 17).
 *
 *   cc -O2 -pthread -o /tmp/flush-steal bench/flush-steal.c
 *   /tmp/flush-steal seq 4194304 15       # write 4 MiB in one call, fdatasync; 15 times
 *   /tmp/flush-steal pages 300 15         # write 300 1 KiB pages at random offsets, fdatasync
 *   /tmp/flush-steal seq 4194304 15 nosync
 *
 * A thread pinned to each of the first two CPUs spins reading the clock and adds up every
 * gap over 50 µs: time taken from it, by another thread of this machine or, on a virtual
 * machine, by its host (steal). The main thread writes into a 32 MiB file under /tmp
 * every 200 ms, syncs it, and reports per round the sync's duration and each spinner's
 * longest gap and total gaps. With both CPUs busy, a host that does a guest's disk work
 * on the guest's cores shows it here; compare with `nosync` (the writes alone) and with
 * a size of 0 (the spinners' floor: the main thread and the kernel's own threads). The
 * machine's steal ticks over all rounds come last (/proc/stat). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FILE_SIZE (32L << 20)
#define PAGE 1024

static volatile int stop;
static volatile long longest[2], lost[2];

/* Steal time so far, all CPUs, in ticks (/proc/stat; 0 where there is none). */
static long steal_ticks(void) {
    long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    if (fscanf(f, "cpu %ld %ld %ld %ld %ld %ld %ld %ld", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]) != 8) v[7] = 0;
    fclose(f);
    return v[7];
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *spin(void *arg) {
    long cpu = (long)arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    long last = now_ns();
    while (!stop) {
        long t = now_ns(), gap = t - last;
        if (gap > 50000) {
            lost[cpu] += gap;
            if (gap > longest[cpu]) longest[cpu] = gap;
        }
        last = t;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4 || (strcmp(argv[1], "seq") && strcmp(argv[1], "pages"))) {
        fprintf(stderr, "usage: %s seq BYTES ROUNDS [nosync] | pages COUNT ROUNDS [nosync]\n", argv[0]);
        return 2;
    }
    int scattered = !strcmp(argv[1], "pages");
    long size = atol(argv[2]);
    int rounds = atoi(argv[3]);
    int sync = !(argc > 4 && !strcmp(argv[4], "nosync"));
    if (rounds < 1 || size < 0 || (!scattered && size > FILE_SIZE)) {
        fprintf(stderr, "ROUNDS must be positive and BYTES at most %ld\n", FILE_SIZE);
        return 2;
    }
    char path[] = "/tmp/flush-steal.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) { perror("mkstemp"); return 1; }
    unlink(path);
    /* Allocated and on disk first: rounds overwrite it, as a rewound log does. */
    static char block[1 << 20];
    memset(block, 'x', sizeof block);
    for (long at = 0; at < FILE_SIZE; at += sizeof block)
        if (pwrite(fd, block, sizeof block, at) != (ssize_t)sizeof block) { perror("pwrite"); return 1; }
    fdatasync(fd);
    char *data = malloc(scattered ? PAGE : size + 1);
    memset(data, 'y', scattered ? PAGE : size + 1);

    pthread_t spinners[2];
    for (long cpu = 0; cpu < 2; cpu++) pthread_create(&spinners[cpu], 0, spin, (void *)cpu);
    usleep(100000);
    long synced = 0, gaps[2] = {0, 0}, total[2] = {0, 0}, at = 0, steal = steal_ticks();
    srand(1);
    for (int round = 0; round < rounds; round++) {
        longest[0] = longest[1] = lost[0] = lost[1] = 0;
        long start = now_ns();
        if (scattered) {
            for (long i = 0; i < size; i++)
                pwrite(fd, data, PAGE, (rand() % (FILE_SIZE / PAGE)) * PAGE);
            start = now_ns(); /* the sync alone */
        } else if (size > 0) {
            pwrite(fd, data, size, at);
            at = (at + size) % (FILE_SIZE - size + 1);
        }
        if (sync) fdatasync(fd);
        synced += now_ns() - start;
        usleep(200000);
        for (int cpu = 0; cpu < 2; cpu++) { gaps[cpu] += longest[cpu]; total[cpu] += lost[cpu]; }
    }
    steal = steal_ticks() - steal;
    stop = 1;
    pthread_join(spinners[0], 0);
    pthread_join(spinners[1], 0);
    printf("%s %ld%s: %s %ld us; per 200 ms, longest gap cpu0 %ld cpu1 %ld us, "
           "time taken cpu0 %ld cpu1 %ld us (means of %d rounds); steal %ld ticks in all\n",
           argv[1], size, scattered ? " pages" : " bytes", sync ? "sync" : "write",
           synced / rounds / 1000, gaps[0] / rounds / 1000, gaps[1] / rounds / 1000,
           total[0] / rounds / 1000, total[1] / rounds / 1000, rounds, steal);
    return 0;
}
