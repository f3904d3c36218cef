// Clang's thread-safety annotations (-Wthread-safety), as LevelDB and Abseil
// use them: members say which lock guards them, functions which locks they
// need. GCC ignores them; tools/check_thread_safety.sh runs clang's analysis
// over the sources (CI does, through the ctest test ThreadSafety).
#pragma once

#if defined(__clang__)
#define MNEMO_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define MNEMO_THREAD_ANNOTATION(x)
#endif

// A type that is a lock.
#define CAPABILITY(x) MNEMO_THREAD_ANNOTATION(capability(x))
// An RAII type that holds a lock for its lifetime.
#define SCOPED_CAPABILITY MNEMO_THREAD_ANNOTATION(scoped_lockable)
// A member read and written only with `x` held (shared suffices to read).
#define GUARDED_BY(x) MNEMO_THREAD_ANNOTATION(guarded_by(x))
// What a pointer member points to is guarded by `x`.
#define PT_GUARDED_BY(x) MNEMO_THREAD_ANNOTATION(pt_guarded_by(x))
// Locks that must be taken in this order.
#define ACQUIRED_BEFORE(...) MNEMO_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define ACQUIRED_AFTER(...) MNEMO_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
// The caller must hold these locks (exclusively / at least shared).
#define REQUIRES(...) MNEMO_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define REQUIRES_SHARED(...) MNEMO_THREAD_ANNOTATION(requires_shared_capability(__VA_ARGS__))
// The function takes / gives up these locks.
#define ACQUIRE(...) MNEMO_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define ACQUIRE_SHARED(...) MNEMO_THREAD_ANNOTATION(acquire_shared_capability(__VA_ARGS__))
#define RELEASE(...) MNEMO_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define RELEASE_SHARED(...) MNEMO_THREAD_ANNOTATION(release_shared_capability(__VA_ARGS__))
#define RELEASE_GENERIC(...) MNEMO_THREAD_ANNOTATION(release_generic_capability(__VA_ARGS__))
#define TRY_ACQUIRE(...) MNEMO_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
// The caller must not hold these locks (the function takes them).
#define EXCLUDES(...) MNEMO_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
// Tells the analysis the lock is held here (checked at run time elsewhere).
#define ASSERT_CAPABILITY(x) MNEMO_THREAD_ANNOTATION(assert_capability(x))
#define ASSERT_SHARED_CAPABILITY(x) MNEMO_THREAD_ANNOTATION(assert_shared_capability(x))
// Turns the analysis off for a function whose locking it cannot follow
// (say why beside it).
#define NO_THREAD_SAFETY_ANALYSIS MNEMO_THREAD_ANNOTATION(no_thread_safety_analysis)
