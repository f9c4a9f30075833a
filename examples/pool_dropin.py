"""A script written for multiprocessing.Pool. Change its first import to
``from corral import Pool`` and it runs its calls as cluster jobs (or locally, where there is
no cluster) and prints the same thing."""

from multiprocessing import Pool


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = 3 * n + 1 if n % 2 else n // 2
        steps += 1
    return steps


def weighted(n: int, weight: float) -> float:
    return collatz_steps(n) * weight


if __name__ == "__main__":
    with Pool(4) as pool:
        steps = pool.map(collatz_steps, range(1, 201))
        print("longest chain below 201 starts at", steps.index(max(steps)) + 1, "with", max(steps), "steps")
        print("weighted sum:", sum(pool.starmap(weighted, [(n, 1 / n) for n in range(1, 51)])))
        print("first five, in order:", list(pool.imap(collatz_steps, range(1, 6))))
        print("as they come, sorted:", sorted(pool.imap_unordered(collatz_steps, range(1, 6))))
        print("one call:", pool.apply_async(collatz_steps, (27,)).get(timeout=600))
