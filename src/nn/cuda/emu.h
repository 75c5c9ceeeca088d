// Host emulation of the few CUDA features kernels.cu uses, for the tests (src/nn/cuda/emu.rs):
// the kernels are compiled by the system C++ compiler (-std=c++20 -ffp-contract=off) and launched
// through `emu_launch`, which takes its parameters as cuLaunchKernel does (an array of pointers to
// the values). Blocks run one after the other. A kernel registered without barriers runs its
// threads one after the other; one registered with barriers runs one OS thread per CUDA thread
// with a std::barrier for __syncthreads (its __shared__ arrays are function statics, shared by the
// threads of the running block). Calling __syncthreads from a kernel registered without barriers
// is an error, reported by emu_launch. Launches are serialised by a mutex.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <math.h>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define SEQPIPE_EMU 1
#define SP_KERNEL extern "C"
#define SP_DEV static inline
#define __shared__ static

struct emu_dim3 {
    unsigned x, y, z;
};
static thread_local emu_dim3 threadIdx;
static emu_dim3 blockIdx, blockDim, gridDim;
static thread_local std::barrier<>* emu_bar = nullptr;

struct emu_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

static inline void __syncthreads() {
    if (!emu_bar) throw emu_error("__syncthreads in a kernel registered without barriers");
    emu_bar->arrive_and_wait();
}

SP_DEV float sp_from_bits(unsigned int u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
SP_DEV unsigned int sp_to_bits(float f) {
    unsigned int u;
    std::memcpy(&u, &f, 4);
    return u;
}

using emu_thunk = std::function<void(void**)>;

template <typename... A, std::size_t... I>
static void emu_call(void (*k)(A...), void** p, std::index_sequence<I...>) {
    k(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(p[I])...);
}
template <typename... A>
static emu_thunk emu_thunk_of(void (*k)(A...)) {
    return [k](void** p) { emu_call(k, p, std::index_sequence_for<A...>{}); };
}

struct emu_entry {
    const char* name;
    emu_thunk f;
    bool barrier;
};
static std::vector<emu_entry>& emu_table() {
    static std::vector<emu_entry> t;
    return t;
}
struct emu_register {
    emu_register(const char* name, emu_thunk f, bool barrier) {
        emu_table().push_back({name, std::move(f), barrier});
    }
};
#define EMU_KERNEL(name, barrier) static emu_register emu_reg_##name(#name, emu_thunk_of(name), barrier);

// 0: done; 1: unknown kernel; 2: bad launch shape; 3: the kernel failed (message in err).
extern "C" int emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                          unsigned by, unsigned bz, void** params, char* err, int errlen) {
    static std::mutex mu;
    std::lock_guard<std::mutex> guard(mu);
    const emu_entry* e = nullptr;
    for (const auto& x : emu_table())
        if (std::strcmp(x.name, name) == 0) e = &x;
    if (!e) {
        std::snprintf(err, errlen, "no kernel `%s` registered", name);
        return 1;
    }
    unsigned nt = bx * by * bz;
    if (nt == 0 || nt > 1024 || gx * gy * gz == 0) {
        std::snprintf(err, errlen, "bad launch shape grid (%u,%u,%u) block (%u,%u,%u)", gx, gy, gz,
                      bx, by, bz);
        return 2;
    }
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    for (unsigned z = 0; z < gz; z++)
        for (unsigned y = 0; y < gy; y++)
            for (unsigned x = 0; x < gx; x++) {
                blockIdx = {x, y, z};
                if (!e->barrier) {
                    try {
                        for (unsigned tz = 0; tz < bz; tz++)
                            for (unsigned ty = 0; ty < by; ty++)
                                for (unsigned tx = 0; tx < bx; tx++) {
                                    threadIdx = {tx, ty, tz};
                                    e->f(params);
                                }
                    } catch (const std::exception& ex) {
                        std::snprintf(err, errlen, "%s: %s", name, ex.what());
                        return 3;
                    }
                } else {
                    std::barrier<> bar(nt);
                    std::vector<std::thread> ts;
                    ts.reserve(nt);
                    for (unsigned tz = 0; tz < bz; tz++)
                        for (unsigned ty = 0; ty < by; ty++)
                            for (unsigned tx = 0; tx < bx; tx++)
                                ts.emplace_back([&, tx, ty, tz] {
                                    threadIdx = {tx, ty, tz};
                                    emu_bar = &bar;
                                    e->f(params);
                                    emu_bar = nullptr;
                                });
                    for (auto& t : ts) t.join();
                }
            }
    return 0;
}
