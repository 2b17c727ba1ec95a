"""Entropy coders shared by the methods: canonical Huffman and the multi-stream symbol coder."""
