"""corral's quick start: run a function over many inputs as batch jobs.

With no cluster here, the "auto" backend runs the calls as local processes; on a SLURM login
node the very same script submits them as array jobs. Run it with:

    python examples/quickstart.py
"""

import math

import corral


def slow_prime_count(limit: int) -> int:
    """Count the primes below ``limit`` (deliberately naive: some real work per call)."""
    return sum(all(n % d for d in range(2, math.isqrt(n) + 1)) for n in range(2, limit))


if __name__ == "__main__":
    with corral.Executor(time="0:10:00", memory="1G") as executor:
        print(f"backend: {executor.backend}")

        # map: one batch, results in input order.
        limits = [10_000 * k for k in range(1, 9)]
        for limit, count in zip(limits, executor.map(slow_prime_count, limits), strict=True):
            print(f"primes below {limit:>6}: {count}")

        # submit: a real concurrent.futures.Future per call.
        future = executor.submit(slow_prime_count, 1000)
        count = future.result()
        print(f"job {future.job_id}: {count} primes below 1000")

        # A failing call raises its own exception type, with the remote traceback attached.
        try:
            executor.submit(math.sqrt, -1).result()
        except ValueError as error:
            print(f"the call failed as it should: ValueError: {error}")
