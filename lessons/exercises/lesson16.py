"""Lesson 16's exercises: where a GPU program waits, and which random draws may live on the device."""
from exercises import Exercise, Sealed, choice

# The right letters of the multiple-choice exercises, sealed (exercises.seal); the answer key
# is tests/lesson_exercise_answers.py.
RIGHT_16_1 = Sealed("16.1", ("2ad030965d2c323c", "58a4f09d59e68531", "a882e6eec0b4e7eb", "d9a6b639b66b0a28"))

RIGHT_16_2 = Sealed("16.2", ("30aac1e28c2fb032",))

EXERCISES = {
    "16.1": Exercise(
        task="the letters of the lines that make the host wait for the GPU",
        verify=lambda answer: choice(answer, RIGHT_16_1, "lines that wait"),
        hint="anything that needs a device value on the host waits: .item(), float(), printing, and a "
             "Python `if` on a device value; a matrix product only queues a kernel; host_choice "
             "never touches the device"),
    "16.2": Exercise(
        task="the letters of the draws that may come from the device generator",
        verify=lambda answer: choice(answer, RIGHT_16_2, "device-side draws"),
        hint="a draw may stay on the device if the host never needs its value: the host must know the "
             "expert before it launches the kernels, and the batch order before it builds the batch"),
}
