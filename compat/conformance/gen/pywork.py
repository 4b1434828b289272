import hashlib, time
def hash_work(n):
    h = b"kiln"
    for _ in range(n):
        h = hashlib.sha256(h).digest()
    return h
def sort_work(n):
    return sorted((i * 7919) % n for i in range(n))
def main():
    end = time.time() + 3
    while time.time() < end:
        hash_work(20000)
        sort_work(20000)
        time.sleep(0.01)
main()
