"""A tiny user task given by import path (`toy_task:Counting`), used to test stages without the built-in worlds."""
import random


class Counting:
    """"Count to N:" → " 1 2 ... N." ; a mistake is a wrong number."""

    name = "counting"

    def prompts(self, split, n, seed):
        rng = random.Random(f"{split}-{seed}")
        base = {"train": 0, "valid": 1, "test": 2}[split]
        return [f"Count to {rng.randrange(2, 6)} ({3 * rng.randrange(100) + base}):" for _ in range(n)]

    def sft_examples(self, n, seed):
        rng = random.Random(seed)
        out = []
        for p in self.prompts("train", n, seed):
            k = int(p.split()[2])
            nums = [str(i if rng.random() > 0.2 else rng.randrange(1, 9)) for i in range(1, k + 1)]
            out.append((p, " " + " ".join(nums) + "."))
        return out

    def score(self, prompt, response):
        k = int(prompt.split()[2])
        words = response.strip(" .").split()
        return sum(w == str(i + 1) for i, w in enumerate(words)) - abs(len(words) - k)

    def minimal_edit(self, prompt, response):
        k = int(prompt.split()[2])
        words = response.strip(" .").split()
        if not response.endswith(".") or not all(w.isdigit() for w in words):
            return " " + " ".join(str(i) for i in range(1, k + 1)) + "."
        fixed = [str(i + 1) for i in range(k)]
        return " " + " ".join(fixed) + "."

    def tokenizer(self, out_dir):
        from fgalign.tasks.tokenizer import train_bpe_tokenizer

        texts = [p + r for p, r in self.sft_examples(500, 0)]
        return train_bpe_tokenizer(texts, out_dir, vocab_size=200)
