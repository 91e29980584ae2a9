from rlm import RLM

document = "Quarterly notes.\n" * 2000 + "The vault code is 4821.\n" + "More notes.\n" * 2000

rlm = RLM(max_iterations=10)  # no server configured: Ollama if it answers, else the embedded model
result = rlm.run("What is the vault code?", document)
print(result.answer)                      # 4821
print(result.status, result.iterations, result.sub_calls, round(result.duration_s, 1))
print({model: usage.to_dict() for model, usage in result.usage.items()}, result.trace)

with RLM(max_iterations=10) as session:   # one sandbox for both questions: variables are kept
    session.run("Store the number of lines of the context in a variable called n_lines.", document)
    print(session.run("What is n_lines?").answer)
