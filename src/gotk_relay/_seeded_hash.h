/* A seeded hash of byte strings for the extensions' own hash tables (write/_route.c's rule
 * memos, destinations/_rows.c's index of label sets, wire/_v2.c's symbols and labels), where a
 * dict keyed by bytes would cost a bytes object and its SipHash per lookup. The construction of wyhash: the 64x64 -> 128 bit
 * product folded to 64 bits mixes 16 bytes per multiplication; the last 16 bytes or fewer are
 * read as two overlapping words, the length mixed in. The seed, drawn at import, keeps which
 * keys collide from being chosen from outside.
 * Include after Python.h. */
#ifndef GOTK_RELAY_SEEDED_HASH_H
#define GOTK_RELAY_SEEDED_HASH_H

#include <stdint.h>
#include <string.h>

static inline uint64_t
sh_fold_mul(uint64_t a, uint64_t b)
{
    __uint128_t r = (__uint128_t)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t
sh_load64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static inline uint64_t
sh_load32(const unsigned char *p)
{
    uint32_t w;
    memcpy(&w, p, 4);
    return w;
}

static inline uint64_t
seeded_hash(uint64_t seed, const unsigned char *key, Py_ssize_t n)
{
    const uint64_t k1 = 0xa0761d6478bd642fULL, k2 = 0xe7037ed1a0b428dbULL;
    uint64_t h = seed ^ ((uint64_t)n * k1);
    Py_ssize_t left = n;
    while (left > 16) {
        h = sh_fold_mul(sh_load64(key) ^ k1, sh_load64(key + 8) ^ h);
        key += 16;
        left -= 16;
    }
    uint64_t a = 0, b = 0;
    if (left >= 8) {
        a = sh_load64(key);
        b = sh_load64(key + left - 8);
    }
    else if (left >= 4) {
        a = sh_load32(key);
        b = sh_load32(key + left - 4);
    }
    else if (left > 0) {
        a = ((uint64_t)key[0] << 16) | ((uint64_t)key[left >> 1] << 8) | key[left - 1];
    }
    return sh_fold_mul(a ^ k2 ^ (uint64_t)n, b ^ h ^ k1);
}

#endif
