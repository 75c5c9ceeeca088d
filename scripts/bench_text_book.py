"""The book's text pipeline (d2l 8.2: read_time_machine, tokenize, Vocab), written from its
semantics, as the baseline of scripts/bench-text.sh: read a file, tokenize it by `char` or
`word`, count, build the vocabulary and the corpus of indices.

usage: python3 bench_text_book.py FILE char|word [VOCAB_JSON]
(with VOCAB_JSON, the vocabulary's tokens in index order are written there, for comparing)
"""
import collections
import json
import re
import sys


def read_lines(path):
    with open(path) as f:
        lines = f.readlines()
    return [re.sub('[^A-Za-z]+', ' ', line).strip().lower() for line in lines]


def tokenize(lines, token):
    if token == 'word':
        return [line.split() for line in lines]
    return [list(line) for line in lines]


class Vocab:
    def __init__(self, tokens, min_freq=0, reserved_tokens=()):
        if tokens and isinstance(tokens[0], list):
            tokens = [token for line in tokens for token in line]
        counter = collections.Counter(tokens)
        self.token_freqs = sorted(counter.items(), key=lambda x: x[1], reverse=True)
        self.idx_to_token = ['<unk>'] + list(reserved_tokens)
        self.token_to_idx = {t: i for i, t in enumerate(self.idx_to_token)}
        for token, freq in self.token_freqs:
            if freq < min_freq:
                break
            if token not in self.token_to_idx:
                self.idx_to_token.append(token)
                self.token_to_idx[token] = len(self.idx_to_token) - 1

    def __len__(self):
        return len(self.idx_to_token)

    def __getitem__(self, token):
        return self.token_to_idx.get(token, 0)


def main():
    path, unit = sys.argv[1], sys.argv[2]
    lines = read_lines(path)
    tokens = tokenize(lines, unit)
    vocab = Vocab(tokens)
    corpus = [vocab[token] for line in tokens for token in line]
    print(f"corpus {len(corpus)} vocab {len(vocab)} first {vocab.idx_to_token[1:6]}")
    if len(sys.argv) > 3:
        with open(sys.argv[3], 'w') as f:
            json.dump(vocab.idx_to_token, f)


if __name__ == '__main__':
    main()
